"""Shared test helpers: random inputs on spheres, backend lists, error measures."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sphere_ops import backends

BACKENDS = [name for name in ("torch", "cpp", "triton") if backends.available(name, "cpu")]


def unit(*shape: int, dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None) -> Tensor:
    x = torch.randn(*shape, dtype=torch.float64, generator=generator)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def tangent(x: Tensor, scale: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """A random tangent vector at each row of x (float64 math, cast back)."""
    xd = x.double()
    u = torch.randn(xd.shape, dtype=torch.float64, generator=generator)
    u = u - (u * xd).sum(-1, keepdim=True) / (xd * xd).sum(-1, keepdim=True) * xd
    return (scale * u).to(x.dtype)


def at_angle(x: Tensor, angle: float | Tensor) -> Tensor:
    """Points at the given angle from the rows of x (float64 math)."""
    xd = x.double()
    w = tangent(xd)
    w = w / w.norm(dim=-1, keepdim=True)
    angle = torch.as_tensor(angle, dtype=torch.float64)
    if angle.dim() > 0:
        angle = angle.unsqueeze(-1)
    return torch.cos(angle) * xd + torch.sin(angle) * w


def max_rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b| over the whole tensor (0 when both vanish)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    return err if scale == 0 else err / scale


def row_rel(a: Tensor, b: Tensor) -> Tensor:
    """Per-row relative error |a - b| / |b| of vectors (absolute where b == 0)."""
    a, b = a.double(), b.double()
    num = (a - b).norm(dim=-1)
    den = b.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), num)


def tolerance(dtype: torch.dtype) -> float:
    """Relative agreement expected between a backend and the float64 reference."""
    return {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]


PI = math.pi


def dinosae_command(*args: object, ranks: int = 1) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``dinosae ARGS`` in a fresh process, under ``torchrun`` on
    ``ranks`` CPU processes when more than one: one thread each, the Triton interpreter on."""
    import os
    import sys

    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    return [sys.executable, *launcher, "-m", "dinosae", *map(str, args)], env


def run_dinosae(*args: object, ranks: int = 1, timeout: float = 300):
    """Run ``dinosae ARGS`` (see :func:`dinosae_command`) to its end; asserts it succeeded."""
    import subprocess

    command, env = dinosae_command(*args, ranks=ranks)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
