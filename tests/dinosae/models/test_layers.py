"""Shared layers: every activation an ``AEConfig`` accepts can be built."""

from __future__ import annotations

import pytest
import torch

from dinosae.config.autoencoder import ACTIVATIONS
from dinosae.models.layers import activation


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_configurable_activation_is_a_nonlinearity(name):
    x = torch.tensor([-3.0, -0.5, 0.5, 3.0])
    y = activation(name)(x)
    assert y[0] > -0.5 and y[0] != x[0]  # negative inputs are (mostly) cut
    assert 2.5 < y[3] <= 3.0  # large positive ones pass (nearly) unchanged


def test_an_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="unknown activation 'tanh'.*silu"):
        activation("tanh")
