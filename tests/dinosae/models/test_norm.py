"""The lean RMSNorm2d: today's outputs, exact gradients, and only the input and a statistic kept."""

from __future__ import annotations

import pytest
import torch

from dinosae.models import norm
from dinosae.models.layers import RMSNorm2d

OVERS = ("pixel", "image")


def formula(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, over: str, eps: float,
            compute: torch.dtype = torch.float32) -> torch.Tensor:
    """What RMSNorm2d computed before it kept less for the backward (with .float() as ``compute``)."""
    dims = (1,) if over == "pixel" else (1, 2, 3)
    scale = torch.rsqrt(x.to(compute).pow(2).mean(dim=dims, keepdim=True) + eps)
    y = (x.to(compute) * scale).to(x.dtype) * weight.view(1, -1, 1, 1)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def random_norm(channels: int, over: str, seed: int, dtype: torch.dtype = torch.float32) -> RMSNorm2d:
    layer = RMSNorm2d(channels, over=over).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return layer


def inputs(shape=(3, 6, 5, 4), seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return 3 * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("over", OVERS)
def test_outputs_are_todays_in_float32_and_float64(over):
    layer = random_norm(6, over, seed=1)
    x = inputs()
    torch.testing.assert_close(layer(x), formula(x, layer.weight, layer.bias, over, layer.eps), rtol=2e-7, atol=2e-7)
    layer64, x64 = random_norm(6, over, seed=1, dtype=torch.float64), x.double()
    expected = formula(x64, layer64.weight, layer64.bias, over, layer64.eps, compute=torch.float64)
    torch.testing.assert_close(layer64(x64), expected, rtol=1e-14, atol=1e-14)
    # the old code computed in float32 even for float64 inputs: the same values to float32 precision
    torch.testing.assert_close(layer64(x64), formula(x64, layer64.weight, layer64.bias, over, layer64.eps),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("over", OVERS)
def test_gradients_pass_gradcheck_in_float64(over):
    layer = random_norm(5, over, seed=2, dtype=torch.float64)
    x = inputs((2, 5, 3, 4), seed=3, dtype=torch.float64).requires_grad_()
    params = (layer.weight, layer.bias) if layer.bias is not None else (layer.weight,)

    def run(x, weight, bias=None):
        return norm.rms_norm_2d(x, weight, bias, over, layer.eps)

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("over", OVERS)
def test_float32_gradients_match_autograd_through_the_formula(over):
    layer = random_norm(6, over, seed=4)
    x = inputs(seed=5).requires_grad_()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    ours = torch.autograd.grad(layer(x), (x, *layer.parameters()), grad)
    theirs = torch.autograd.grad(formula(x, layer.weight, layer.bias, over, layer.eps), (x, *layer.parameters()), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("over", OVERS)
def test_a_batch_in_chunks_gives_the_whole_batchs_values_and_gradients(over, monkeypatch):
    layer = random_norm(6, over, seed=7)
    x = inputs((5, 6, 4, 4), seed=8).requires_grad_()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    whole = (layer(x), *torch.autograd.grad(layer(x), (x, *layer.parameters()), grad))
    monkeypatch.setattr(norm, "CHUNK_ELEMENTS", 2 * 6 * 4 * 4)  # two images a pass: 3 passes
    chunked = (layer(x), *torch.autograd.grad(layer(x), (x, *layer.parameters()), grad))
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("over", OVERS)
def test_under_bf16_autocast_only_the_input_and_a_statistic_are_kept(over):
    layer = random_norm(8, over, seed=10)
    x = inputs((2, 8, 6, 6), seed=11).to(torch.bfloat16).requires_grad_()
    kept = []

    def pack(tensor):
        if not any(tensor.data_ptr() == p.data_ptr() for p in layer.parameters()):
            kept.append(tensor)
        return tensor

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    stat = (2, 1, 6, 6) if over == "pixel" else (2, 1, 1, 1)
    assert y.dtype == torch.bfloat16
    assert [(t.dtype, tuple(t.shape)) for t in kept] == [(torch.bfloat16, (2, 8, 6, 6)), (torch.float32, stat)]
    assert kept[0].data_ptr() == x.data_ptr()
    # the same values as the formula in float32, up to the one rounding to bf16
    torch.testing.assert_close(y.float(), formula(x.float(), layer.weight, layer.bias, over, layer.eps),
                               rtol=8e-3, atol=8e-3)
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and layer.weight.grad.dtype == torch.float32


def test_channels_last_stays_channels_last():
    layer = random_norm(6, "pixel", seed=12)
    x = inputs(seed=13).to(memory_format=torch.channels_last).requires_grad_()
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, formula(x, layer.weight, layer.bias, "pixel", layer.eps), rtol=2e-7, atol=2e-7)
    y.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="'pixel' or 'image'"):
        norm.rms_norm_2d(torch.ones(1, 2, 2, 2), torch.ones(2), None, over="channel")
    with pytest.raises(ValueError, match="NCHW"):
        norm.rms_norm_2d(torch.ones(2, 2), torch.ones(2), None)
