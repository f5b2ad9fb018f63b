"""Benchmark of the sphere ops against the alternatives a user would pick.

For every op, shape and dtype, each implementation (see
:mod:`dinosae.bench.sphere_impls`) is timed forward and forward+backward, side
by side in one run. Reported per row: the median time, the useful bandwidth
(each input read once and each output written once; for forward+backward also
the saved inputs and output gradients read and the input gradients written),
that bandwidth as a fraction of a device-to-device copy on CUDA, and the time
ratios against eager torch and against ``torch.compile``.

Run it as ``dinosae bench kernels`` or ``python -m dinosae.bench.kernels``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from . import timing
from .sphere_impls import OPS, implementations, make_inputs

__all__ = ["OPS", "MODES", "DTYPES", "Config", "Result", "run", "format_table", "to_json"]

MODES = ("fwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Result:
    op: str
    rows: int
    dim: int
    dtype: str
    mode: str
    impl: str
    median_ms: float = math.nan
    gbps: float = math.nan
    copy_fraction: float = math.nan
    vs_eager: float = math.nan
    vs_compile: float = math.nan
    error: str = ""


@dataclass
class Config:
    ops: Sequence[str] = OPS
    rows: Sequence[int] = (16384,)
    dims: Sequence[int] = (768,)
    dtypes: Sequence[str] = ("float32",)
    modes: Sequence[str] = MODES
    impls: Sequence[str] | None = None  # names as printed; None = all
    device: str = "cpu"
    repeats: int = 10
    seed: int = 0


def _useful_bytes(inputs: Sequence[Tensor], outputs: Sequence[Tensor], mode: str) -> int:
    fwd = timing.tensor_bytes(inputs) + timing.tensor_bytes(outputs)
    if mode == "fwd":
        return fwd
    return fwd + timing.tensor_bytes(inputs) + timing.tensor_bytes(outputs) + timing.tensor_bytes(inputs)


def _differentiable(inputs: dict) -> list[str]:
    return [k for k in inputs if k != "t"]


def _prepare(impl, inputs_per_copy: list[dict], mode: str, device: torch.device):
    """A call ``fn(i)`` of one implementation on input copy ``i``, with its inputs and outputs."""
    names = list(inputs_per_copy[0])
    leaves_per_copy = [
        {k: (v.detach().requires_grad_(mode != "fwd") if k in _differentiable(inputs) else v) for k, v in inputs.items()}
        for inputs in inputs_per_copy
    ]
    with torch.no_grad():
        outputs = impl(*(leaves_per_copy[0][k] for k in names))
    g = torch.Generator(device=device).manual_seed(1)
    grads = [torch.randn(o.shape, generator=g, device=device, dtype=torch.float32).to(o.dtype) for o in outputs]

    def call(i: int) -> None:
        leaves = leaves_per_copy[i % len(leaves_per_copy)]
        args = [leaves[k] for k in names]
        if mode == "fwd":
            with torch.no_grad():
                impl(*args)
            return
        outs = impl(*args)
        torch.autograd.grad(outs, [leaves[k] for k in _differentiable(leaves)], grads, allow_unused=True)

    return call, list(inputs_per_copy[0].values()), list(outputs)


def run(config: Config, progress: Iterable | None = None) -> list[Result]:
    """Every (op, shape, dtype, mode, implementation) of ``config``, timed side by side."""
    device = torch.device(config.device)
    results: list[Result] = []
    copy_bw: dict[int, float] = {}
    cases = [
        (op, rows, dim, dtype, mode)
        for op in config.ops
        for rows in config.rows
        for dim in config.dims
        for dtype in config.dtypes
        for mode in config.modes
    ]
    for op, rows, dim, dtype_name, mode in progress(cases) if progress else cases:
        dtype = DTYPES[dtype_name]
        first = make_inputs(op, rows, dim, dtype, device, seed=config.seed)
        copies = timing.rotations(timing.tensor_bytes(first.values()), device)
        inputs = [first] + [make_inputs(op, rows, dim, dtype, device, seed=config.seed + i) for i in range(1, copies)]
        by_name: dict[str, Result] = {}
        calls, sizes = {}, {}
        for name, impl in implementations(op, device).items():
            if config.impls and name not in config.impls:
                continue
            by_name[name] = result = Result(op, rows, dim, dtype_name, mode, name)
            try:
                call, ins, outs = _prepare(impl, inputs, mode, device)
                call(0)  # an alternative that cannot run this case is reported, not fatal
            except Exception as err:
                result.error = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
                continue
            calls[name], sizes[name] = call, _useful_bytes(ins, outs, mode)
        timings = timing.measure_side_by_side(calls, device, repeats=config.repeats) if calls else {}
        for name, t in timings.items():
            result, nbytes = by_name[name], sizes[name]
            result.median_ms = t.median * 1e3
            result.gbps = nbytes / t.median / 1e9
            if device.type == "cuda":
                if nbytes not in copy_bw:
                    copy_bw[nbytes] = timing.copy_bandwidth(nbytes, device)
                result.copy_fraction = nbytes / t.median / copy_bw[nbytes]
        _add_ratios(list(by_name.values()))
        results.extend(by_name.values())
    return results


def _add_ratios(group: list[Result]) -> None:
    by_name = {r.impl: r for r in group}
    for r in group:
        for ref, attr in (("eager", "vs_eager"), ("compile", "vs_compile")):
            other = by_name.get(ref)
            if other is not None and not math.isnan(other.median_ms) and not math.isnan(r.median_ms):
                setattr(r, attr, other.median_ms / r.median_ms)


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table; ratios above 1 mean faster than eager / compile."""
    header = f"{'op':<18} {'shape':<13} {'dtype':<9} {'mode':<8} {'impl':<18} {'ms':>9} {'GB/s':>7} {'copy%':>6} {'x eager':>8} {'x compile':>9}"
    lines = [header, "-" * len(header)]
    for r in results:
        shape = f"{r.rows}x{r.dim}"
        if r.error:
            lines.append(f"{r.op:<18} {shape:<13} {r.dtype:<9} {r.mode:<8} {r.impl:<18} failed: {r.error}")
            continue
        copy = "" if math.isnan(r.copy_fraction) else f"{100 * r.copy_fraction:.0f}"
        lines.append(
            f"{r.op:<18} {shape:<13} {r.dtype:<9} {r.mode:<8} {r.impl:<18} {r.median_ms:>9.2f} {r.gbps:>7.1f} "
            f"{copy:>6} {r.vs_eager:>8.2f} {r.vs_compile:>9.2f}"
        )
    return "\n".join(lines)


def to_json(results: Sequence[Result], config: Config) -> dict:
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if config.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
    }
    try:
        from sphere_ops import _C

        env["cpu_isa"] = _C.cpu_isa()
    except ImportError:
        pass
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    return {"config": cfg, "environment": env, "results": [asdict(r) for r in results]}
