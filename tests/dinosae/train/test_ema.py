"""The EMA tracks only trainable weights, warms up, and round-trips through its state."""

from __future__ import annotations

import torch

from dinosae.train.ema import EMA


def _model() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    return model


def test_tracks_trainable_weights_only():
    assert set(EMA(_model(), 0.99).shadow) == {"1.weight", "1.bias"}


def test_warmup_then_decay_match_the_closed_form():
    model = _model()
    ema = EMA(model, decay=0.5)
    start = model[1].weight.detach().clone()
    expected = start.clone()
    for n in range(5):
        with torch.no_grad():
            model[1].weight.add_(torch.randn_like(model[1].weight))
        decay = min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model[1].weight.detach()
        ema.update(model)
    torch.testing.assert_close(ema.shadow["1.weight"], expected)


def test_state_round_trip_and_copy_to():
    model = _model()
    ema = EMA(model, 0.9)
    ema.update(model)
    other = EMA(model, 0.9)
    other.load_state_dict({k: v + 1 for k, v in ema.state_dict().items()}, updates=ema.updates)
    other.copy_to(model)
    torch.testing.assert_close(model[1].bias.detach(), ema.shadow["1.bias"] + 1)
    assert other.updates == 1


def test_without_warmup_the_decay_is_constant_as_in_dit():
    layer = torch.nn.Linear(3, 1)
    start = layer.weight.detach().clone()
    ema = EMA(layer, decay=0.9, warmup=False)
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(layer)
    torch.testing.assert_close(ema.shadow["weight"], start + 0.1, rtol=0, atol=1e-6)
