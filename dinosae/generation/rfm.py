"""Flow-matching objectives on spherical latents: Riemannian (geodesic path) and Euclidean (linear path).

Time runs from t = 0 (noise) to t = 1 (data). A model is any callable
``model(x_t, t, y) -> v`` with ``x_t`` (B, ..., D), ``t`` (B,) and labels ``y``
(B,), such as :class:`dinosae.models.dit.DiT`.

Riemannian flow matching (RFM) on the product of spheres: ``x0`` uniform on
each sphere, ``x1`` the data, ``x_t`` on the shortest arc between them and the
target ``u_t = d x_t / dt``, both from ``sphere_ops.geodesic_velocity``. The
loss is the squared norm of ``v - u_t`` per token, averaged over tokens and
samples. The sphere :class:`~dinosae.models.dit.DiT` scales its input by
``sqrt(D)`` and returns a tangent velocity itself.

Euclidean flow matching (the ablation baseline) takes the same latents scaled
by ``sqrt(D)`` as ``x1``, so that a token has the norm of a standard Gaussian
draw in R^D; ``x0`` is Gaussian, the path linear, ``x_t = (1 - t) x0 + t x1``,
and the target ``x1 - x0``.

Time samplers draw the training times: :class:`UniformTime`,
:class:`LogitNormalTime`, and :class:`ShiftedTime`, which warps either towards
noise for high-dimensional latents (:func:`time_shift`, :func:`dimension_shift`).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor

import sphere_ops
from dinosae.config.training import TIME_SAMPLERS, dimension_shift

__all__ = [
    "TimeSampler",
    "UniformTime",
    "LogitNormalTime",
    "ShiftedTime",
    "time_shift",
    "dimension_shift",
    "make_time_sampler",
    "rfm_loss",
    "euclidean_fm_loss",
]

# A velocity field v(x_t, t, y): points or latents (B, ..., D), times (B,), labels (B,).
Model = Callable[[Tensor, Tensor, Tensor], Tensor]
# A flow-matching loss: (model, x1, y, *, time_sampler, generator, check_data) -> (loss, aux).
Objective = Callable[..., tuple[Tensor, dict[str, Tensor]]]


# ---------------------------------------------------------------- time sampling


class TimeSampler(Protocol):
    """Draws ``n`` training times in [0, 1] (t = 0 noise, t = 1 data) as a tensor (n,).

    Example:
        >>> sampler: TimeSampler = ShiftedTime(LogitNormalTime(), 2.0)
        >>> sampler(5, dtype=torch.float64).dtype
        torch.float64
    """

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor: ...


class UniformTime:
    """t ~ U[0, 1).

    Example:
        >>> UniformTime()(3, generator=torch.Generator().manual_seed(0))
        tensor([0.4963, 0.7682, 0.0885])
    """

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return torch.rand(n, generator=generator, device=device, dtype=dtype)

    def __repr__(self) -> str:
        return "UniformTime()"


class LogitNormalTime:
    """t = sigmoid(m + s * N(0, 1)) (Esser et al. 2024), which favors the middle of the path.

    With t = 1 data, a positive ``mean`` favors times nearer the data; SD3's
    convention (t = 1 noise) has the opposite sign.

    Example:
        >>> t = LogitNormalTime(0.0, 1.0)(10_000, generator=torch.Generator().manual_seed(0))
        >>> round(t.mean().item(), 2)
        0.5
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.mean + self.std * z)

    def __repr__(self) -> str:
        return f"LogitNormalTime(mean={self.mean}, std={self.std})"


def time_shift(t: Tensor | float, shift: float) -> Tensor | float:
    """Warp times towards noise: ``t' = t / (shift - (shift - 1) t)``.

    This is the shift of SD3 and of RAE (``s sigma / (1 + (s - 1) sigma)`` on the
    noise level ``sigma = 1 - t``), written for t = 1 data. It keeps 0 and 1 fixed;
    ``shift > 1`` spends more time near noise, which high-dimensional latents need
    because noise destroys their signal more slowly. ``shift = 1`` is the identity.

    Example:
        >>> time_shift(torch.tensor([0.0, 0.5, 1.0]), 3.0)
        tensor([0.0000, 0.2500, 1.0000])
    """
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return t / (shift - (shift - 1) * t)


class ShiftedTime:
    """Times from ``base`` warped by :func:`time_shift`.

    Example:
        >>> sampler = ShiftedTime(UniformTime(), dimension_shift(256 * 768))
        >>> t = sampler(10_000, generator=torch.Generator().manual_seed(0))
        >>> bool(t.median() < 0.2)
        True
    """

    def __init__(self, base: TimeSampler, shift: float) -> None:
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.base, self.shift = base, float(shift)

    def __call__(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return time_shift(self.base(n, generator=generator, device=device, dtype=dtype), self.shift)

    def __repr__(self) -> str:
        return f"ShiftedTime({self.base!r}, shift={self.shift})"


def make_time_sampler(name: str, shift: float = 1.0) -> TimeSampler:
    """The time sampler of a training config: ``"uniform"`` or ``"logit-normal"``, then shifted.

    Example:
        >>> make_time_sampler("logit-normal", 3.0)
        ShiftedTime(LogitNormalTime(mean=0.0, std=1.0), shift=3.0)
    """
    if name not in TIME_SAMPLERS:
        raise ValueError(f"unknown time sampler {name!r}; choose one of {TIME_SAMPLERS}")
    base = UniformTime() if name == "uniform" else LogitNormalTime()
    return base if shift == 1.0 else ShiftedTime(base, shift)


# ---------------------------------------------------------------- objectives


def rfm_loss(
    model: Model,
    x1: Tensor,
    y: Tensor,
    *,
    time_sampler: TimeSampler | None = None,
    generator: torch.Generator | None = None,
    check_data: bool = True,
    radius: float = 1.0,
    radial_weight: float = 1.0,
    draws: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Riemannian flow-matching loss of ``model`` on data ``x1`` (B, ..., D) with unit tokens.

    Draws t (``time_sampler``, uniform by default) and then x0 uniform on each
    sphere, both from ``generator`` (:func:`draw_times_and_noise`), unless
    given as ``draws = (t, x0)``. Returns the loss, a scalar that
    backpropagates, and ``aux``: the detached per-sample losses (``"loss"``, (B,))
    and their times (``"t"``, (B,)), for logging the loss over time.

    Per token the loss is ``R^2 (|v_tan - u_t|^2 + w |v_rad|^2)``, summed over
    D and averaged over tokens and samples: ``v_rad = <v, x_t> x_t`` is the part
    of the prediction that leaves the sphere (zero for a model that projects
    its output onto the tangent space), ``w = radial_weight`` and ``R = radius``.
    The defaults give the plain ``|v - u_t|^2``; the HAE paper trains on spheres
    of radius R = 32 with w = 0.1, which only rescales the loss (R^2) and
    penalizes radial predictions less.

    The check that ``x1`` has unit tokens reads one number on the host; it is
    skipped inside ``torch.compile`` and with ``check_data=False`` (data that
    are unit by construction, such as a latent cache's). To compile the whole loss, leave
    ``generator`` at None: dynamo cannot trace an explicit generator and
    breaks the graph there (or compile only the model).

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10)
        >>> x1 = sphere_ops.random_uniform((8, 16), 16)
        >>> loss, aux = rfm_loss(model, x1, torch.randint(10, (8,)), generator=torch.Generator().manual_seed(0))
        >>> loss.backward(); aux["loss"].shape
        torch.Size([8])
    """
    _check_data(x1, y, unit=check_data)
    t, x0 = draws if draws is not None else draw_times_and_noise(x1, "sphere", time_sampler, generator)
    xt, ut = sphere_ops.geodesic_velocity(x0, x1, _per_token(t, x1))
    v = model(xt, t, y)
    if radial_weight == 1.0:
        loss, aux = _squared_error(v, ut, t)
    else:
        _check_output(v, ut)
        dtype = torch.promote_types(ut.dtype, torch.float32)
        v, xt, ut = v.to(dtype), xt.to(dtype), ut.to(dtype)
        radial = (v * xt).sum(-1, keepdim=True) * xt
        loss, aux = _average((v - radial - ut).pow(2).sum(-1) + radial_weight * radial.pow(2).sum(-1), t)
    if radius == 1.0:
        return loss, aux
    return loss * radius**2, {**aux, "loss": aux["loss"] * radius**2}


def euclidean_fm_loss(
    model: Model,
    x1: Tensor,
    y: Tensor,
    *,
    time_sampler: TimeSampler | None = None,
    generator: torch.Generator | None = None,
    scale: float | None = None,
    check_data: bool = True,
    draws: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Euclidean flow-matching loss (linear path, Gaussian x0) on data ``x1 * scale`` (B, ..., D).

    ``scale`` defaults to ``sqrt(D)``: unit tokens then have the norm of a
    standard Gaussian token, so noise and data are of one size (use the same
    ``scale`` in :func:`dinosae.generation.sampling.sample_euclidean`). Returns ``(loss, aux)``
    as :func:`rfm_loss`. The model must not rescale its input (``manifold="euclidean"``).

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10, manifold="euclidean")
        >>> x1 = sphere_ops.random_uniform((8, 16), 16)
        >>> loss, aux = euclidean_fm_loss(model, x1, torch.randint(10, (8,)))
        >>> loss.shape, aux["t"].shape
        (torch.Size([]), torch.Size([8]))
    """
    _check_data(x1, y, unit=False)
    scale = math.sqrt(x1.shape[-1]) if scale is None else float(scale)
    t, x0 = draws if draws is not None else draw_times_and_noise(x1, "euclidean", time_sampler, generator)
    data = scale * x1
    tt = _per_token(t, x1).to(x1.dtype)
    xt = (1 - tt) * x0 + tt * data
    return _squared_error(model(xt, t, y), data - x0, t)


def draw_times_and_noise(x1: Tensor, manifold: str, time_sampler: TimeSampler | None = None,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The times t (B,) and starting points x0 (shaped as ``x1``) of a flow-matching batch, drawn in this
    order from ``generator``: x0 uniform on each sphere (``"sphere"``) or standard normal (``"euclidean"``).

    A training step with micro-batches draws them for its whole batch and slices them, so that its
    result does not depend on how it is split.

    Example:
        >>> t, x0 = draw_times_and_noise(sphere_ops.random_uniform((4, 3), 8), "sphere")
        >>> t.shape, x0.shape, bool(torch.allclose(x0.norm(dim=-1), torch.ones(4, 3)))
        (torch.Size([4]), torch.Size([4, 3, 8]), True)
    """
    t = (time_sampler or UniformTime())(x1.shape[0], generator=generator, device=x1.device, dtype=_time_dtype(x1))
    if manifold == "sphere":
        x0 = sphere_ops.random_uniform(x1.shape[:-1], x1.shape[-1], generator=generator, dtype=x1.dtype,
                                       device=x1.device)
    else:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    return t, x0


def _check_output(v: Tensor, target: Tensor) -> None:
    if v.shape != target.shape:
        raise ValueError(f"the model returned shape {tuple(v.shape)}, expected {tuple(target.shape)}")


def _squared_error(v: Tensor, target: Tensor, t: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    _check_output(v, target)
    dtype = torch.promote_types(target.dtype, torch.float32)  # half-precision outputs: sum in float32
    return _average((v.to(dtype) - target.to(dtype)).pow(2).sum(-1), t)


def _average(per_token: Tensor, t: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss (mean over tokens, then samples) and the aux of the objectives: per-sample losses and times."""
    per_sample = per_token.flatten(1).mean(1)
    return per_sample.mean(), {"loss": per_sample.detach(), "t": t.detach()}


def _per_token(t: Tensor, x: Tensor) -> Tensor:
    """(B,) times as (B, 1, ..., 1), broadcastable to x[..., :1]."""
    return t.view(-1, *([1] * (x.dim() - 1)))


def _time_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_data(x1: Tensor, y: Tensor, *, unit: bool) -> None:
    if not isinstance(x1, Tensor) or not x1.dtype.is_floating_point:
        raise ValueError(f"x1 must be a floating tensor, got {getattr(x1, 'dtype', type(x1).__name__)}")
    if x1.dim() < 2 or x1.shape[-1] < 2:
        raise ValueError(f"x1 must have shape (B, ..., D) with D >= 2, got {tuple(x1.shape)}")
    if not isinstance(y, Tensor) or y.shape != x1.shape[:1]:
        raise ValueError(f"y must be a tensor of {x1.shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")
    if unit and not torch.compiler.is_compiling():
        # half-precision latents are unit only to their rounding
        tol = 1e-3 if x1.dtype in (torch.float32, torch.float64) else 2e-2
        error = float((x1.float().norm(dim=-1) - 1).abs().max())
        if not error <= tol:
            raise ValueError(f"x1 must have unit tokens (points on S^(D-1)); the largest | |x| - 1 | is {error:.3g}")
