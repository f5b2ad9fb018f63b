"""What the network predicts: the velocity at x_t, or the endpoint x1, and the velocity an endpoint implies.

Along the constant-speed path from x0 to x1 (the geodesic on the sphere, the
line in R^D) the velocity at x_t is ``logmap(x_t, x1) / (1 - t)``: what is left
of the way, over the time left. An endpoint prediction ``x1_hat`` gives the
velocity ``logmap(x_t, x1_hat) / (1 - t)``, which equals a velocity prediction
wherever ``x1_hat`` is exact.

Near t = 1 the factor ``1 / (1 - t)`` diverges. The denominator is floored at
``floor``: in training at :data:`TRAIN_FLOOR` (as JiT does), so that the loss
weights of the last 5% of the path stay bounded, and the target gets the same
floor, so the loss is exactly the velocity loss for ``t <= 1 - TRAIN_FLOOR`` and
a bounded multiple of the endpoint error above it. Solvers use
:data:`SAMPLE_FLOOR`, far below any step, and never evaluate an endpoint field
at t = 1 (:mod:`dinosae.flow.solvers` takes the last step of Heun as Euler).
"""

from __future__ import annotations

from torch import Tensor

from dinosae.flow.manifolds import Manifold

__all__ = ["TRAIN_FLOOR", "SAMPLE_FLOOR", "time_left", "endpoint_velocity"]

TRAIN_FLOOR = 0.05
SAMPLE_FLOOR = 1e-4


def time_left(t: Tensor, floor: float) -> Tensor:
    """``max(1 - t, floor)``: the time left to t = 1, floored.

    Example:
        >>> import torch
        >>> time_left(torch.tensor([0.5, 0.99, 1.0]), 0.05)
        tensor([0.5000, 0.0500, 0.0500])
    """
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    return (1 - t).clamp_min(floor)


def endpoint_velocity(manifold: Manifold, x: Tensor, x1_hat: Tensor, t: Tensor, floor: float) -> Tensor:
    """The velocity at ``x`` (time ``t``, broadcastable to ``x[..., :1]``) that reaches ``x1_hat`` at t = 1:
    ``logmap(x, x1_hat) / max(1 - t, floor)``.

    Example:
        >>> import torch
        >>> from dinosae.flow.manifolds import Euclidean
        >>> endpoint_velocity(Euclidean(1.0), torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5]]),
        ...                   TRAIN_FLOOR)
        tensor([[2., 4.]])
    """
    return manifold.logmap(x, x1_hat) / time_left(t, floor).to(x.dtype)
