"""The frozen ViT: creation from a local file (never a download), its weights in timm's or Meta's names, and
running it on a token grid as its own forward does."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

from dinosae.models.vit import (RandomTeacherWarning, create_vit, load_vit_state, nonzero_qv_biases, run_on_grid,
                                tapped_tokens)

NAME = "vit_tiny_patch16_dinov3_qkvb"


def _vit(depth: int = 2, image_size: int = 32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return create_vit(NAME, image_size, depth=depth)


def test_random_teacher_is_announced():
    with pytest.warns(RandomTeacherWarning, match="not meaningful"):
        create_vit(NAME, 32, depth=1)


def test_missing_teacher_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher weights"):
        create_vit(NAME, 32, tmp_path / "nope.pth")


def test_teacher_weights_file_is_loaded_frozen_and_in_eval_mode(tmp_path):
    source = _vit()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "dino.safetensors")
    loaded = create_vit(NAME, 32, tmp_path / "dino.safetensors", depth=2)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_a_grid_runs_as_the_vits_own_forward_and_taps_stop_at_the_deepest():
    vit = _vit(depth=3)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = vit.forward_features(images)[:, vit.num_prefix_tokens:]
        tokens, taps = run_on_grid(vit, vit.patch_embed(images), (0, 1))
        torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
        for tap, again in zip(taps, tapped_tokens(vit, vit.patch_embed(images), (0, 1))):
            assert torch.equal(tap, again)
    with pytest.raises(ValueError, match="NHWC token grid"):
        run_on_grid(vit, torch.rand(2, 4, 192))


def test_unknown_keys_and_dropped_biases_are_refused():
    vit = _vit()
    with pytest.raises(ValueError, match=r"has ViT keys .* does not: \['blocks.0.attn.extra'\]"):
        load_vit_state(vit, {**vit.state_dict(), "blocks.0.attn.extra": torch.ones(2)}, source="weights.pth")
    with pytest.raises(ValueError, match="does not hold a flat dict of tensors"):
        load_vit_state(vit, {"blocks": {"0": torch.ones(1)}}, source="weights.pth")
    biases = {"blocks.0.attn.qkv.bias": torch.ones(3), "blocks.1.attn.qkv.bias": torch.zeros(3)}
    assert nonzero_qv_biases(biases) == ["blocks.0.attn.qkv.bias"]
