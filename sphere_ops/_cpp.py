"""The ``cpp`` backend: the compiled extension ``sphere_ops._C`` (CPU, and CUDA when built with it).

Tensors are handed over as data pointers of contiguous rows (see
:mod:`sphere_ops._launch`); CUDA launches go on the current stream.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import _C
from ._launch import RowKernels, Tensors

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}

_HUGE_PAGE_BYTES = 1 << 22
# First-touch page faults on a fresh 50 MB output cost more than the kernel. Huge
# pages cut them about 3x when the kernel has free 2 MB pages, but when other
# code has fragmented memory (any training loop) they stall each call while
# the OS compacts it, often making things slower: opt in with SPHERE_OPS_HUGEPAGES=1.
_HUGE_PAGES = os.environ.get("SPHERE_OPS_HUGEPAGES", "0") == "1"


class _CppKernels(RowKernels):
    def supports(self, x: Tensor) -> bool:
        """Whether these kernels take x (CUDA: float32/bfloat16/float16 with D <= 1024)."""
        return not x.is_cuda or x.shape[-1] <= _C.cuda_max_dim(_DTYPE_CODES[x.dtype])

    def rows(self, x: Tensor) -> Tensor:
        x = super().rows(x)
        if x.is_cuda and x.data_ptr() % 16:
            x = x.clone()  # 16-byte vector loads need aligned rows
        return x

    def allocate(self, rows: Tensor, per_row: bool, dtype: torch.dtype) -> Tensor:
        """Large CPU outputs are backed by huge pages before the kernel writes them."""
        out = super().allocate(rows, per_row, dtype)
        if _HUGE_PAGES and not out.is_cuda:
            nbytes = out.numel() * out.element_size()
            if nbytes >= _HUGE_PAGE_BYTES:
                _C.advise_hugepages(out.data_ptr(), nbytes)
        return out

    def launch(self, kernel: str, rows: Tensor, inputs: Tensors, scalars: list[float], outputs: Tensors) -> None:
        r, d = rows.shape
        code = _DTYPE_CODES[rows.dtype]
        pointers = [*map(_pointer, inputs), *scalars, *map(_pointer, outputs)]
        if not rows.is_cuda:
            getattr(_C, kernel)(False, 0, code, r, d, *pointers)
            return
        with torch.cuda.device(rows.device):
            stream = torch.cuda.current_stream(rows.device).cuda_stream
            getattr(_C, kernel)(True, stream, code, r, d, *pointers)


def _pointer(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


kernels = _CppKernels()
