"""Where the time of geodesic_velocity forward+backward goes on CPU at (16384, 768) float32.

    python bench/profile_geodesic_velocity.py

Times the compiled kernels alone on preallocated outputs, and the cost of writing
four fresh outputs of the same size (what any implementation pays for its results).
"""

import statistics
import time

import torch

import sphere_ops
from sphere_ops import _C

ROWS, D = 16384, 768


def median_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    x0, x1 = sphere_ops.random_uniform((ROWS,), D), sphere_ops.random_uniform((ROWS,), D)
    t = torch.rand(ROWS)
    g_xt, g_ut = torch.randn(ROWS, D), torch.randn(ROWS, D)
    xt, ut, g_x0, g_x1 = (torch.zeros(ROWS, D) for _ in range(4))
    g_t = torch.empty(ROWS)
    head = (False, 0, 0, ROWS, D)  # CPU, no stream, float32
    forward = median_ms(lambda: _C.geodesic_velocity(*head, x0.data_ptr(), x1.data_ptr(), t.data_ptr(), xt.data_ptr(), ut.data_ptr()))
    backward = median_ms(
        lambda: _C.geodesic_velocity_backward(
            *head, g_xt.data_ptr(), g_ut.data_ptr(), x0.data_ptr(), x1.data_ptr(), t.data_ptr(),
            g_x0.data_ptr(), g_x1.data_ptr(), g_t.data_ptr(),
        )
    )
    outputs = median_ms(lambda: [torch.empty_like(x0).fill_(0) for _ in range(4)])
    print(f"kernels only: forward {forward:.1f} ms + backward {backward:.1f} ms; "
          f"four fresh {ROWS}x{D} float32 outputs written once: {outputs:.1f} ms")


if __name__ == "__main__":
    main()
