"""Flow matching as one layer: manifolds as objects, one loss, time samplers and ODE solvers.

Modelled on the split of Meta's ``flow_matching``: the geometry
(:mod:`~dinosae.flow.manifolds`: :class:`Sphere`, :class:`Euclidean`) is an
object that the loss (:mod:`~dinosae.flow.loss`) and the solvers
(:mod:`~dinosae.flow.solvers`) are given, never a string they branch on; what
the network predicts (a velocity or the endpoint x1) is
:mod:`~dinosae.flow.prediction`; when to train and integrate is
:mod:`~dinosae.flow.times`.

Example:
    >>> import torch
    >>> from dinosae import create_model
    >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10)
    >>> x1 = model.manifold.prior((4, 16, 16))
    >>> loss, _ = flow_matching_loss(model, model.manifold, x1, torch.randint(10, (4,)))
    >>> sample(model.eval(), model.manifold, (4, 16, 16), torch.arange(4), steps=2, method="midpoint").shape
    torch.Size([4, 16, 16])
"""

from dinosae.flow.loss import Model, draw_times_and_noise, flow_matching_loss
from dinosae.flow.manifolds import Euclidean, Manifold, Sphere, make_manifold
from dinosae.flow.prediction import PREDICTIONS, endpoint_velocity
from dinosae.flow.solvers import SOLVERS, VelocityField, function_evaluations, sample, solve
from dinosae.flow.times import (LogitNormalTime, ShiftedTime, TimeSampler, UniformTime, dimension_shift,
                                make_time_sampler, time_grid, time_shift)

__all__ = [
    "Euclidean", "LogitNormalTime", "Manifold", "Model", "PREDICTIONS", "SOLVERS", "ShiftedTime", "Sphere",
    "TimeSampler", "UniformTime", "VelocityField", "dimension_shift", "draw_times_and_noise", "endpoint_velocity",
    "flow_matching_loss", "function_evaluations", "make_manifold", "make_time_sampler", "sample", "solve",
    "time_grid", "time_shift",
]
