"""ODE solvers on a manifold: Euler, Heun and midpoint, with classifier-free guidance and AutoGuidance.

They integrate ``dx/dt = v(x, t)`` from the prior at t = 0 to data at t = 1 on a
time grid (:func:`dinosae.flow.times.time_grid`). Every move is the manifold's
``step``, so on the sphere every state is on the sphere; a slope taken at
another point is transported back before it is used.

- Euler: one evaluation per step.
- Heun: the mean of the slopes at x and at the Euler prediction; two
  evaluations per step. An endpoint model's field is not defined at t = 1
  (:mod:`dinosae.flow.prediction`), so its last Heun step is an Euler step.
- Midpoint: the slope at the half-step Euler prediction; two evaluations per step.

:class:`VelocityField` turns a model into ``v(x, t)``: it batches the
conditional and the null-class inputs of classifier-free guidance into one
model call, ``v_null + w (v_cond - v_null)``, optionally only for times inside
a guidance interval, and counts its evaluations (the NFE).

AutoGuidance (Karras et al. 2024) extrapolates from a weaker model of the same
task (an earlier checkpoint, a smaller DiT): ``v_guide + W (v_main - v_guide)``
on the conditional velocities. With classifier-free guidance as well, the two
differences add, ``v = v_cfg + (W - 1) (v_cond - v_guide)``, which is each
guidance alone when the other scale is 1. Every velocity is tangent at the
same ``x_t``, so the combination stays in that tangent space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dinosae.flow.names import PREDICTIONS, SOLVERS, check_name
from dinosae.flow.loss import Model
from dinosae.flow.manifolds import Manifold
from dinosae.flow.prediction import SAMPLE_FLOOR, endpoint_velocity
from dinosae.flow.times import time_grid

__all__ = ["VelocityField", "evaluation_times", "solve", "sample", "function_evaluations"]



class VelocityField:
    """``v(x, t)`` for a float time: the velocity of ``model`` (or the one its endpoint implies) for labels
    ``y``, guided with ``cfg_scale`` and, with a ``guide`` model, AutoGuidance of weight ``guidance`` where
    guidance applies, tangent at ``x``. ``nfe`` counts the evaluations, ``guide_calls`` the guide's.

    Example:
        >>> from dinosae.flow.manifolds import Euclidean
        >>> field = VelocityField(lambda x, t, y: -x, Euclidean(1.0), torch.tensor([0]))
        >>> field(torch.ones(1, 2, 2), 0.5), field.nfe
        (tensor([[[-1., -1.],
                 [-1., -1.]]]), 1)
    """

    def __init__(self, model: Model, manifold: Manifold, y: Tensor, *, prediction: str = "velocity",
                 cfg_scale: float = 1.0, guidance_interval: tuple[float, float] | None = None,
                 guide: Model | None = None, guidance: float = 1.0) -> None:
        check_name("prediction", prediction, PREDICTIONS)
        if guidance_interval is not None and not 0.0 <= guidance_interval[0] <= guidance_interval[1] <= 1.0:
            raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo <= hi <= 1, got {guidance_interval}")
        if not math.isfinite(cfg_scale) or not math.isfinite(guidance):
            raise ValueError(f"guidance scales must be finite, got cfg {cfg_scale} and AutoGuidance {guidance}")
        if guidance != 1.0 and guide is None:
            raise ValueError(f"AutoGuidance of weight {guidance} needs a guide model")
        self.cfg = cfg_scale != 1.0
        if self.cfg and not hasattr(model, "num_classes"):
            raise ValueError("classifier-free guidance needs model.num_classes (the null class label)")
        self.autoguide = guide is not None and guidance != 1.0
        self.model, self.manifold, self.y, self.prediction = model, manifold, y, prediction
        self.cfg_scale, self.guidance_interval = cfg_scale, guidance_interval
        self.guide_model, self.guidance = guide, guidance
        self.nfe = self.guide_calls = 0

    @property
    def defined_at_end(self) -> bool:
        """Whether the field may be evaluated at t = 1 (an endpoint's implied velocity may not)."""
        return self.prediction == "velocity"

    def in_interval(self, t: float) -> bool:
        """Whether ``t`` is inside the guidance interval (every time without one)."""
        interval = self.guidance_interval
        return interval is None or interval[0] <= t <= interval[1]

    def guided_at(self, t: float) -> bool:
        """Whether classifier-free guidance applies at time ``t``."""
        return self.cfg and self.in_interval(t)

    def autoguided_at(self, t: float) -> bool:
        """Whether AutoGuidance applies at time ``t``."""
        return self.autoguide and self.in_interval(t)

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.nfe += 1
        time_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        tt = torch.full((x.shape[0],), t, dtype=time_dtype, device=x.device)
        if self.guided_at(t):
            y_null = torch.full_like(self.y, self.model.num_classes)
            both = self.model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([self.y, y_null])).to(x.dtype)
            velocity_cond, velocity_null = self._velocity(torch.cat([x, x]), t, both).chunk(2)
            v = velocity_null + self.cfg_scale * (velocity_cond - velocity_null)
        else:
            velocity_cond = v = self._velocity(x, t, self.model(x, tt, self.y).to(x.dtype))
        if self.autoguided_at(t):
            self.guide_calls += 1
            velocity_guide = self._velocity(x, t, self.guide_model(x, tt, self.y).to(x.dtype))
            v = v + (self.guidance - 1.0) * (velocity_cond - velocity_guide)
        return self.manifold.project(x, v)

    def _velocity(self, x: Tensor, t: float, out: Tensor) -> Tensor:
        if self.prediction == "velocity":
            return out
        return endpoint_velocity(self.manifold, x, out, torch.tensor(t, dtype=torch.float64), SAMPLE_FLOOR)


def solve(field: VelocityField, x: Tensor, grid: Sequence[float], method: str = "euler") -> Tensor:
    """Integrate ``field`` from ``x`` at ``grid[0]`` to ``grid[-1]`` with ``method`` on ``field``'s manifold.

    Example:
        >>> from dinosae.flow.manifolds import Euclidean
        >>> field = VelocityField(lambda x, t, y: torch.ones_like(x), Euclidean(1.0), torch.tensor([0]))
        >>> solve(field, torch.zeros(1, 1, 2), [0.0, 0.5, 1.0], "midpoint"), field.nfe
        (tensor([[[1., 1.]]]), 4)
    """
    check_name("solver", method, SOLVERS)
    manifold = field.manifold
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        v0 = field(x, t0)
        if method == "euler" or (method == "heun" and t1 == 1.0 and not field.defined_at_end):
            x = manifold.step(x, h * v0)
        elif method == "heun":
            predicted = manifold.step(x, h * v0)
            v1 = manifold.transport(x, predicted, field(predicted, t1))
            x = manifold.step(x, 0.5 * h * (v0 + v1))
        else:
            middle = manifold.step(x, 0.5 * h * v0)
            x = manifold.step(x, h * manifold.transport(x, middle, field(middle, t0 + 0.5 * h)))
    return x


def function_evaluations(method: str, steps: int, prediction: str = "velocity") -> int:
    """The number of evaluations of the field (NFE) that :func:`solve` makes on a grid of ``steps`` steps.

    Example:
        >>> function_evaluations("euler", 50), function_evaluations("heun", 50), function_evaluations("heun", 50, "x1")
        (50, 100, 99)
    """
    check_name("solver", method, SOLVERS)
    if method == "euler":
        return steps
    return 2 * steps - (method == "heun" and prediction == "x1")


def evaluation_times(method: str, grid: Sequence[float], prediction: str = "velocity") -> list[float]:
    """The times at which :func:`solve` evaluates the field on ``grid``, in order (guidance counts them).

    Example:
        >>> evaluation_times("midpoint", [0.0, 0.5, 1.0]), evaluation_times("heun", [0.0, 0.5, 1.0], "x1")
        ([0.0, 0.25, 0.5, 0.75], [0.0, 0.5, 0.5])
    """
    check_name("solver", method, SOLVERS)
    times = []
    for t0, t1 in zip(grid[:-1], grid[1:]):
        times.append(t0)
        if method == "midpoint":
            times.append(t0 + 0.5 * (t1 - t0))
        elif method == "heun" and not (t1 == 1.0 and prediction != "velocity"):
            times.append(t1)
    return times


@torch.no_grad()
def sample(model: Model, manifold: Manifold, shape: Sequence[int], y: Tensor, *, prediction: str = "velocity",
           steps: int = 50, method: str = "euler", cfg_scale: float = 1.0,
           guidance_interval: tuple[float, float] | None = None, shift: float = 1.0,
           generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
           noise: Tensor | None = None, guide: Model | None = None, guidance: float = 1.0) -> Tensor:
    """Points (B, ..., D) on ``manifold`` from integrating ``model`` from its prior.

    ``model(x, t, y)`` predicts ``prediction`` in data units (put it in eval mode). ``cfg_scale`` w gives
    ``v_null + w (v_cond - v_null)`` (w = 1: one model call per evaluation), at times in ``guidance_interval
    = (lo, hi)`` when given and at every time otherwise; so does AutoGuidance by ``guide`` with weight
    ``guidance`` (a model of the same manifold, labels and prediction). ``shift`` warps the time grid (:func:`time_grid`).
    The noise comes from ``generator`` on ``y``'s device, so a seeded generator gives the same samples;
    ``noise`` gives the starting points instead.

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10).eval()
        >>> x = sample(model, model.manifold, (2, 16, 16), torch.tensor([1, 2]), steps=4, method="heun", cfg_scale=2.0)
        >>> x.shape, bool(((x.norm(dim=-1) - 1).abs() < 1e-6).all())
        (torch.Size([2, 16, 16]), True)
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or min(shape) < 1 or shape[-1] < 2:
        raise ValueError(f"shape must be (B, ..., D) with D >= 2, got {shape}")
    if not isinstance(y, Tensor) or y.shape != shape[:1]:
        raise ValueError(f"y must be a tensor of {shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")
    check_name("solver", method, SOLVERS)
    if noise is None:
        x = manifold.prior(shape, generator=generator, dtype=dtype, device=y.device)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have the sample shape {shape}, got {tuple(noise.shape)}")
    else:
        x = noise.to(device=y.device, dtype=dtype)
    field = VelocityField(model, manifold, y, prediction=prediction, cfg_scale=cfg_scale,
                          guidance_interval=guidance_interval, guide=guide, guidance=guidance)
    return solve(field, x, time_grid(steps, shift), method)
