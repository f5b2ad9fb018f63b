"""conv_of: a convolution of an activation or an upsampling, recomputing the map in the backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinosae.config.autoencoder import ACTIVATIONS
from dinosae.models.layers import activation
from dinosae.models.recompute import NEAREST_X2, conv_of

MAPS = [*ACTIVATIONS, "nearest x2"]
CONVS = {"3x3": dict(kernel_size=3, padding=1), "depthwise": dict(kernel_size=3, padding=1, groups=6),
         "1x1 no bias": dict(kernel_size=1, bias=False)}


def make(name: str):
    return NEAREST_X2 if name == "nearest x2" else activation(name)


def plain(conv: nn.Conv2d, fn, h: torch.Tensor) -> torch.Tensor:
    return conv(fn.forward(h) if fn is NEAREST_X2 else fn(h))


def case(map_name: str, conv_name: str, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(6, 6, **CONVS[conv_name]).to(dtype)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    h = (2 * torch.randn(2, 6, 5, 5, generator=g, dtype=dtype)).requires_grad_()
    return conv, make(map_name), h, g


def outputs_and_grads(run, conv, fn, h, grad=None):
    out = run(conv, fn, h)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype) if grad is None else grad
    return out, torch.autograd.grad(out, (h, *conv.parameters()), grad)


@pytest.mark.parametrize("conv_name", CONVS)
@pytest.mark.parametrize("map_name", MAPS)
def test_values_and_gradients_are_autograds_bit_for_bit(map_name, conv_name):
    conv, fn, h, _ = case(map_name, conv_name)
    out, grads = outputs_and_grads(conv_of, conv, fn, h)
    ref_out, ref_grads = outputs_and_grads(plain, conv, fn, h)
    assert torch.equal(out, ref_out)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("map_name", MAPS)
def test_under_bf16_autocast_too(map_name):
    conv, fn, h, _ = case(map_name, "3x3", seed=2)
    h = h.detach().to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = outputs_and_grads(conv_of, conv, fn, h)
        ref_out, ref_grads = outputs_and_grads(plain, conv, fn, h)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref_out)
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32]
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("map_name", ["silu", "gelu", "hswish", "nearest x2"])
def test_gradcheck_in_float64(map_name):
    conv, fn, h, _ = case(map_name, "depthwise", dtype=torch.float64, seed=3)

    def run(h, weight, bias):
        conv.weight, conv.bias = weight, bias
        return conv_of(conv, fn, h)

    weight, bias = (nn.Parameter(p.detach().clone()) for p in (conv.weight, conv.bias))
    assert torch.autograd.gradcheck(run, (h, weight, bias))


@pytest.mark.parametrize("map_name", ["silu", "nearest x2"])
def test_only_the_maps_input_is_kept(map_name):
    conv, fn, h, _ = case(map_name, "3x3", seed=4)
    kept = []

    def pack(tensor):
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv_of(conv, fn, h)
    assert {t.data_ptr() for t in kept} == {h.data_ptr(), conv.weight.data_ptr()}


def test_unknown_maps_and_padding_modes_fall_back_to_autograd():
    conv, _, h, _ = case("silu", "3x3", seed=5)
    out, grads = outputs_and_grads(conv_of, conv, nn.Tanh(), h)
    ref_out, ref_grads = outputs_and_grads(plain, conv, nn.Tanh(), h)
    assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    conv.padding_mode = "reflect"
    assert torch.equal(conv_of(conv, nn.SiLU(), h), conv(nn.SiLU()(h)))
