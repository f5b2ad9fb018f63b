"""What the shared launcher hands the compiled extension: kernel, sizes and pointers, in its order."""

from __future__ import annotations

import pytest
import torch

from sphere_ops._spec import SPECS

from helpers import BACKENDS, unit

pytestmark = pytest.mark.skipif("cpp" not in BACKENDS, reason="the compiled extension is not importable")

ROWS, D = 4, 6

# After (cuda, stream, dtype code, rows, D): the pointers and scalars each call passes; 0 is a
# null pointer (a skipped output or gradient); g<arg> is the gradient returned for <arg>.
EXTENSION_CALLS = {
    "normalize": ("normalize", "x eps out"),
    "normalize_backward": ("normalize_backward", "grad x eps gx"),
    "proju": ("proju", "x u out"),
    "proju_backward": ("proju_backward", "grad x u gx gu"),
    "dist": ("dist", "x y out"),
    "dist_backward": ("dist_backward", "grad x y gx gy"),
    "expmap": ("expmap", "x u out"),
    "expmap_backward": ("expmap_backward", "grad x u gx gu"),
    "logmap": ("logmap", "x y out"),
    "logmap_backward": ("logmap_backward", "grad x y gx gy"),
    "geodesic": ("geodesic_velocity", "x0 x1 t xt 0"),
    "geodesic_backward": ("geodesic_velocity_backward", "grad 0 x0 x1 t gx0 gx1 gt"),
    "geodesic_velocity": ("geodesic_velocity", "x0 x1 t xt ut"),
    "geodesic_velocity_backward": ("geodesic_velocity_backward", "grad_xt grad_ut x0 x1 t gx0 gx1 gt"),
    "transp": ("transp", "x y v out"),
    "transp_backward": ("transp_backward", "grad x y v gx gy gv"),
}


class _Recorder:
    """Stands in for sphere_ops._C: records each kernel call instead of running it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, kernel: str):
        return lambda *args: self.calls.append((kernel, *args))


def test_every_kernel_call_is_listed() -> None:
    assert set(EXTENSION_CALLS) == {f"{name}{suffix}" for name in SPECS for suffix in ("", "_backward")}


@pytest.mark.parametrize("method", sorted(EXTENSION_CALLS))
def test_cpu_calls_pass_pointers_in_the_extension_order(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sphere_ops import _cpp

    recorder = _Recorder()
    monkeypatch.setattr(_cpp, "_C", recorder)
    op = method.removesuffix("_backward")
    spec = SPECS[op]
    values = {arg.name: unit(ROWS, D, dtype=torch.float32) for arg in spec.args}
    values.update(t=torch.rand(ROWS, 1), eps=1e-12)
    args = [values[arg.name] for arg in spec.args]
    if method.endswith("_backward"):
        grads = [torch.randn(tuple(o.shape(a.shape))) for o, a in zip(spec.outputs, spec.likes(args))]
        values.update(zip(spec.grad_names, grads))
        result = getattr(_cpp.kernels, method)(*grads, *args)
        names = [f"g{arg.name}" for arg in spec.grad_args]
    else:
        result = getattr(_cpp.kernels, method)(*args)
        names = [o.name for o in spec.outputs]
    values.update(zip(names, result if isinstance(result, tuple) else (result,)))
    values["0"] = 0

    kernel, expected = EXTENSION_CALLS[method]
    passed = [v.data_ptr() if isinstance(v, torch.Tensor) else v for v in (values[n] for n in expected.split())]
    assert recorder.calls == [(kernel, False, 0, 0, ROWS, D, *passed)]
