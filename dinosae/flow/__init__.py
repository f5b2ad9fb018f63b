"""Flow matching as one layer: manifolds as objects, one loss, time samplers and ODE solvers.

Modelled on the split of Meta's ``flow_matching``: the geometry
(:mod:`~dinosae.flow.manifolds`: :class:`Sphere`, :class:`Euclidean`) is an
object that the loss (:mod:`~dinosae.flow.loss`) and the solvers
(:mod:`~dinosae.flow.solvers`) are given, never a string they branch on; what
the network predicts (a velocity or the endpoint x1) is
:mod:`~dinosae.flow.prediction`; when to train and integrate is
:mod:`~dinosae.flow.times`.

The vocabulary (:mod:`~dinosae.flow.names`) imports without torch; every other
name loads its module on first use.

Example:
    >>> import torch
    >>> from dinosae import create_model
    >>> from dinosae.flow import flow_matching_loss, sample
    >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10)
    >>> x1 = model.manifold.prior((4, 16, 16))
    >>> loss, _ = flow_matching_loss(model, model.manifold, x1, torch.randint(10, (4,)))
    >>> sample(model.eval(), model.manifold, (4, 16, 16), torch.arange(4), steps=2, method="midpoint").shape
    torch.Size([4, 16, 16])
"""

from __future__ import annotations

import importlib
from typing import Any

from dinosae.flow.names import MANIFOLDS, PREDICTIONS, SOLVERS, TIME_SAMPLERS

# Where each public name lives. They load on first use, so that the command line can read the vocabulary
# above (dinosae.flow.names) without importing torch.
_MODULES = {
    "loss": ("Model", "draw_times_and_noise", "flow_matching_loss"),
    "manifolds": ("Euclidean", "Manifold", "Sphere", "make_manifold"),
    "prediction": ("endpoint_velocity",),
    "solvers": ("VelocityField", "evaluation_times", "function_evaluations", "sample", "solve"),
    "times": ("LogitNormalTime", "ShiftedTime", "TimeSampler", "UniformTime", "dimension_shift", "make_time_sampler",
              "time_grid", "time_shift", "training_shift"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(["MANIFOLDS", "PREDICTIONS", "SOLVERS", "TIME_SAMPLERS", *_HOME])


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'dinosae.flow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dinosae.flow.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
