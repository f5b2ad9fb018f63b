"""Accuracy of ``dist`` and ``logmap`` in float32, at chosen angles, for every implementation.

Pairs (x, y) at each angle are drawn in float64 and rounded to float32; the
truth is the float64 reference evaluated on those same float32 values, so only
the implementation's own error is measured. ``dist`` errors are relative (absolute
at angle 0); ``logmap`` errors are |L - L64| / |L64| per row (absolute at angle 0).
The worst row over ``pairs`` random pairs is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

import sphere_ops
from sphere_ops import reference

from .sphere_impls import EAGER, _flow_matching, _geoopt, _ours

ANGLES = (0.0, 1e-6, 1e-4, 1e-2, 1.0, math.pi / 2, 3.0, math.pi - 1e-3)


@dataclass
class AccuracyRow:
    impl: str
    op: str
    angle: float
    error: float  # relative, or absolute at angle 0; nan where the implementation gave NaN


def pairs_at(angle: float, count: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 pairs whose float64 angle is ``angle`` before rounding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(count, dim, generator=g, dtype=torch.float64), dim=-1)
    w = torch.randn(count, dim, generator=g, dtype=torch.float64)
    w = w - (w * x).sum(-1, keepdim=True) * x
    w = w / w.norm(dim=-1, keepdim=True)
    y = math.cos(angle) * x + math.sin(angle) * w
    return x.float(), y.float()


def _implementations() -> dict[str, dict]:
    impls = {}
    for name in ("cpp", "triton", "torch"):
        if sphere_ops.available(name, "cpu"):
            impls[f"sphere_ops:{name}"] = {op: _ours(op, name) for op in ("dist", "logmap")}
    impls["eager (acos)"] = {op: EAGER[op] for op in ("dist", "logmap")}
    for name, factory in (("geoopt", _geoopt), ("flow_matching", _flow_matching)):
        if factory("dist") is not None:
            impls[name] = {op: factory(op) for op in ("dist", "logmap")}
    return impls


def measure(angles: Sequence[float] = ANGLES, pairs: int = 256, dim: int = 768) -> list[AccuracyRow]:
    rows = []
    impls = _implementations()
    for angle in angles:
        x, y = pairs_at(angle, pairs, dim)
        true_dist = reference.dist(x.double(), y.double())
        true_log = reference.logmap(x.double(), y.double())
        for name, ops in impls.items():
            (dist,) = ops["dist"](x, y)
            (log,) = ops["logmap"](x, y)
            d_err = (dist.double() - true_dist).abs()
            l_err = (log.double() - true_log).norm(dim=-1)
            if angle > 0:
                d_err = d_err / true_dist
                l_err = l_err / true_log.norm(dim=-1)
            rows.append(AccuracyRow(name, "dist", angle, _worst(d_err)))
            rows.append(AccuracyRow(name, "logmap", angle, _worst(l_err)))
    return rows


def _worst(err: torch.Tensor) -> float:
    return math.nan if torch.isnan(err).any() else err.max().item()


def format_table(rows: Sequence[AccuracyRow]) -> str:
    angles = sorted({r.angle for r in rows})
    impls = list(dict.fromkeys(r.impl for r in rows))
    names = {0.0: "0", math.pi / 2: "pi/2", math.pi - 1e-3: "pi-1e-3"}
    head = f"{'op':<7} {'implementation':<18}" + "".join(f"{names.get(a, f'{a:g}'):>10}" for a in angles)
    lines = [head, "-" * len(head)]
    for op in ("dist", "logmap"):
        for impl in impls:
            errs = {r.angle: r.error for r in rows if r.op == op and r.impl == impl}
            lines.append(f"{op:<7} {impl:<18}" + "".join(f"{errs[a]:>10.1e}" for a in angles))
    return "\n".join(lines)


def to_json(rows: Sequence[AccuracyRow]) -> list[dict]:
    return [asdict(r) for r in rows]
