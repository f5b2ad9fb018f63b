"""Saved DiT configs from before the flow layer (``dinosae.flow``), read as today's.

Those runs named the geometry in the training config (``path: rfm | euclidean``)
and set the sphere's scale with three knobs: the model's ``input_scale`` (None:
sqrt(D)) and ``output_scale``, and the loss's ``radius``. Today the model has
``manifold`` and one ``radius``: the network sees ``radius * x`` and predicts
velocities of that size. A saved run keeps its input scale as its radius; its
network's outputs were velocities times ``output_scale`` on the sphere (and
times ``output_scale`` at the data scale sqrt(D) in R^D), so the last layer's
weights are multiplied by ``radius / output_scale`` (in R^D ``1 / output_scale``;
:attr:`SavedDiT.output_gain`) to predict the same velocities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dinosae.config.training import PATHS

__all__ = ["SavedDiT", "read_saved_dit"]


@dataclass(frozen=True)
class SavedDiT:
    """A checkpoint's DiT and training configs as today's dicts, and the gain of its network's last layer.

    Example:
        >>> SavedDiT({"radius": 2.0}, {}, 1.0).output_gain
        1.0
    """

    model: dict[str, Any]
    train: dict[str, Any]
    output_gain: float


def read_saved_dit(model: dict[str, Any], train: dict[str, Any]) -> SavedDiT:
    """Today's configs of a saved run (unchanged if it is recent).

    Example:
        >>> old = read_saved_dit({"in_dim": 16, "input_scale": None, "output_scale": 1.0},
        ...                      {"path": "rfm", "radius": 1.0, "lr": 1e-4})
        >>> old.model, old.train, old.output_gain
        ({'in_dim': 16, 'manifold': 'sphere', 'radius': 4.0}, {'lr': 0.0001}, 4.0)
        >>> read_saved_dit({"in_dim": 16, "radius": 2.0}, {}).output_gain
        1.0
    """
    if "path" not in train and "input_scale" not in model and "output_scale" not in model:
        return SavedDiT(dict(model), dict(train), 1.0)
    model, train = dict(model), dict(train)
    path = train.pop("path", "rfm")
    train.pop("radius", None)
    if path not in PATHS:
        raise ValueError(f"the saved training config has path {path!r}; expected one of {tuple(PATHS)}")
    manifold = model.setdefault("manifold", PATHS[path])
    input_scale = model.pop("input_scale", None)
    output_scale = float(model.pop("output_scale", 1.0))
    # A Euclidean model took its input as it came, at the loss's fixed data scale sqrt(D).
    radius = float(input_scale) if input_scale is not None and manifold == "sphere" else math.sqrt(model["in_dim"])
    model["radius"] = radius
    gain = (radius if manifold == "sphere" else 1.0) / output_scale
    return SavedDiT(model, train, gain)
