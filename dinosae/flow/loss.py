"""The flow-matching loss, one function for every manifold and prediction.

A model is any callable ``model(x_t, t, y)`` with ``x_t`` (B, ..., D) in data
units, ``t`` (B,) and labels ``y`` (B,), returning its prediction in data units
(a velocity or an endpoint, as ``prediction`` says), such as
:class:`dinosae.models.dit.DiT`, which maps its network's output through its
manifold's ``from_model``.

With x0 from the manifold's prior and ``(x_t, u_t)`` its interpolant, the loss
per token is ``scale^2 (|v_tan - u_t|^2 + w |v_nor|^2)``: ``v`` is the predicted
velocity (an endpoint's implied velocity, :mod:`dinosae.flow.prediction`),
``v_tan`` its part tangent at x_t and ``v_nor`` the rest (zero in R^D, and for
a model that projects its output), ``w = radial_weight``. The factor
``scale^2`` measures the error at the scale the network works at (the HAE
paper's R^2 on the sphere). The loss is averaged over tokens and samples.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from dinosae.flow.names import PREDICTIONS, check_name
from dinosae.flow.manifolds import Manifold
from dinosae.flow.prediction import TRAIN_FLOOR, endpoint_velocity, time_left
from dinosae.flow.times import TimeSampler, UniformTime

__all__ = ["Model", "flow_matching_loss", "draw_times_and_noise", "per_token"]

# A prediction p(x_t, t, y) in data units: points (B, ..., D), times (B,), labels (B,).
Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def flow_matching_loss(model: Model, manifold: Manifold, x1: Tensor, y: Tensor, *, prediction: str = "velocity",
                       time_sampler: TimeSampler | None = None, generator: torch.Generator | None = None,
                       draws: tuple[Tensor, Tensor] | None = None, check_data: bool = True,
                       radial_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The flow-matching loss of ``model`` on data ``x1`` (B, ..., D) (see the module docstring).

    Draws t (``time_sampler``, uniform by default) and then x0 from the prior, both from ``generator``
    (:func:`draw_times_and_noise`), unless given as ``draws = (t, x0)``. Returns the loss, a scalar that
    backpropagates, and ``aux``: the detached per-sample losses (``"loss"``, (B,)) and their times
    (``"t"``, (B,)), for logging the loss over time.

    ``check_data`` checks that ``x1`` lies on the manifold (a host read; skipped inside ``torch.compile``).
    To compile the whole loss, leave ``generator`` at None: dynamo cannot trace an explicit generator.

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10)
        >>> x1 = model.manifold.prior((8, 16, 16))
        >>> loss, aux = flow_matching_loss(model, model.manifold, x1, torch.randint(10, (8,)),
        ...                                generator=torch.Generator().manual_seed(0))
        >>> loss.backward(); aux["loss"].shape
        torch.Size([8])
    """
    _check_data(manifold, x1, y, check_data)
    check_name("prediction", prediction, PREDICTIONS)
    if not radial_weight >= 0:
        raise ValueError(f"radial_weight must be >= 0, got {radial_weight}")
    t, x0 = draws if draws is not None else draw_times_and_noise(manifold, x1, time_sampler, generator)
    tt = per_token(t, x1)
    xt, ut = manifold.interpolate(x0, x1, tt)
    out = model(xt, t, y)
    if out.shape != ut.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)}, expected {tuple(ut.shape)}")
    dtype = torch.promote_types(ut.dtype, torch.float32)  # half-precision outputs: sum in float32
    v, ut, xt = out.to(dtype), ut.to(dtype), xt.to(dtype)
    if prediction == "x1":
        v = endpoint_velocity(manifold, xt, v, tt, TRAIN_FLOOR)
        ut = ut * ((1 - tt) / time_left(tt, TRAIN_FLOOR)).to(dtype)
    if radial_weight == 1.0:
        error = (v - ut).pow(2).sum(-1)
    else:
        tangent = manifold.project(xt, v)
        error = (tangent - ut).pow(2).sum(-1) + radial_weight * (v - tangent).pow(2).sum(-1)
    per_sample = error.flatten(1).mean(1) * manifold.scale**2
    return per_sample.mean(), {"loss": per_sample.detach(), "t": t.detach()}


def draw_times_and_noise(manifold: Manifold, x1: Tensor, time_sampler: TimeSampler | None = None,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The times t (B,) and starting points x0 (shaped as ``x1``) of a batch, drawn in this order from
    ``generator``.

    A training step with micro-batches draws them for its whole batch and slices them, so that its result
    does not depend on how it is split.

    Example:
        >>> from dinosae.flow.manifolds import Sphere
        >>> t, x0 = draw_times_and_noise(Sphere(1.0), torch.ones(4, 3, 8))
        >>> t.shape, x0.shape, bool(torch.allclose(x0.norm(dim=-1), torch.ones(4, 3)))
        (torch.Size([4]), torch.Size([4, 3, 8]), True)
    """
    time_dtype = torch.float64 if x1.dtype == torch.float64 else torch.float32
    t = (time_sampler or UniformTime())(x1.shape[0], generator=generator, device=x1.device, dtype=time_dtype)
    return t, manifold.prior(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)


def per_token(t: Tensor, x: Tensor) -> Tensor:
    """(B,) times as (B, 1, ..., 1), broadcastable to ``x[..., :1]``.

    Example:
        >>> per_token(torch.zeros(2), torch.zeros(2, 3, 4)).shape
        torch.Size([2, 1, 1])
    """
    return t.view(-1, *([1] * (x.dim() - 1)))


def _check_data(manifold: Manifold, x1: Tensor, y: Tensor, on_manifold: bool) -> None:
    if not isinstance(x1, Tensor) or not x1.dtype.is_floating_point:
        raise ValueError(f"x1 must be a floating tensor, got {getattr(x1, 'dtype', type(x1).__name__)}")
    if x1.dim() < 2 or x1.shape[-1] < 2:
        raise ValueError(f"x1 must have shape (B, ..., D) with D >= 2, got {tuple(x1.shape)}")
    if not isinstance(y, Tensor) or y.shape != x1.shape[:1]:
        raise ValueError(f"y must be a tensor of {x1.shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")
    if on_manifold and not torch.compiler.is_compiling():
        manifold.check_points(x1, "x1")
