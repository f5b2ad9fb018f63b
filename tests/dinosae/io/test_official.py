"""The official release's checkpoint layout loads through an explicit key mapping.

No released file is available offline, so these tests build one with the
release's key names and shapes (as its model code defines them) and check the
mapped modules against an independent forward pass written directly on the
official tensors, following the release's math: image-wide RMS norms,
pixel-shuffle upsampling with duplicating shortcuts, norm-free EfficientViT
blocks, and stage 0 the deepest.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dinosae.io.loading import load_autoencoder
from dinosae.models.vit import RandomTeacherWarning, create_vit
from dinosae.io.official import OfficialFormatError, infer_config, is_official, map_official

D = 192
WIDTHS = (24, 48, 96, 192, 192)
KINDS = ("res", "res", "res", "vit", "vit")


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) / math.sqrt(max(1, shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)))


def _official_decoder() -> dict[str, torch.Tensor]:
    state = {"decoder.project_in.main.conv.weight": _randn(WIDTHS[-1], D, 3, 3),
             "decoder.project_in.main.conv.bias": torch.randn(WIDTHS[-1]) * 0.1}
    stages = len(WIDTHS)
    for k in range(stages):
        s = stages - 1 - k
        width = WIDTHS[s]
        prefix = f"decoder.stages.{k}.op_list."
        index = 0
        if s < stages - 1:
            state[prefix + "0.main.conv.conv.weight"] = _randn(4 * width, WIDTHS[s + 1], 3, 3)
            state[prefix + "0.main.conv.conv.bias"] = torch.randn(4 * width) * 0.1
            index = 1
        block = prefix + f"{index}."
        if KINDS[s] == "res":
            state[block + "main.conv1.conv.weight"] = _randn(width, width, 3, 3)
            state[block + "main.conv1.conv.bias"] = torch.randn(width) * 0.1
            state[block + "main.conv2.conv.weight"] = _randn(width, width, 3, 3)
            state[block + "main.conv2.norm.weight"] = 1 + 0.1 * torch.randn(1, width, 1, 1)
        else:
            state[block + "context_module.main.qkv.conv.weight"] = _randn(3 * width, width, 1, 1)
            state[block + "context_module.main.proj.conv.weight"] = _randn(width, width, 1, 1)
            state[block + "local_module.main.inverted_conv.conv.weight"] = _randn(8 * width, width, 1, 1)
            state[block + "local_module.main.inverted_conv.conv.bias"] = torch.randn(8 * width) * 0.1
            state[block + "local_module.main.depth_conv.conv.weight"] = _randn(8 * width, 1, 3, 3)
            state[block + "local_module.main.depth_conv.conv.bias"] = torch.randn(8 * width) * 0.1
            state[block + "local_module.main.point_conv.conv.weight"] = _randn(width, 4 * width, 1, 1)
    state["decoder.project_out.op_list.0.weight"] = 1 + 0.1 * torch.randn(1, WIDTHS[0], 1, 1)
    state["decoder.project_out.op_list.2.conv.weight"] = _randn(3, WIDTHS[0], 3, 3)
    state["decoder.project_out.op_list.2.conv.bias"] = torch.randn(3) * 0.1
    return state


def _official_stem() -> dict[str, torch.Tensor]:
    channels = (3, 64, 128, 256, D)
    state = {}
    for i in range(4):
        kernel = 7 if i == 0 else 3
        state[f"dino_model.patch_embed.cnn.{i}.conv.weight"] = _randn(channels[i + 1], channels[i], kernel, kernel)
        if i < 3:
            state[f"dino_model.patch_embed.cnn.{i}.norm.weight"] = 1 + 0.1 * torch.randn(1, channels[i + 1], 1, 1)
    return state


def _meta_vit(vit: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm DINOv3 ViT's weights under Meta's original names, minus the patch embedding."""
    meta = {"dino_model.mask_token": torch.zeros(1, D), "dino_model.rope_embed.periods": torch.ones(8)}
    for key, value in vit.state_dict().items():
        if key.startswith("patch_embed.") or key.endswith(("q_bias", "v_bias")):
            continue
        name = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        meta["dino_model." + name] = value
        if key.endswith("attn.qkv.weight"):
            base = key[: -len("qkv.weight")]
            q, v = vit.state_dict()[base + "q_bias"], vit.state_dict()[base + "v_bias"]
            meta["dino_model." + base + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
            meta["dino_model." + base + "qkv.bias_mask"] = torch.ones(3 * D)
    return meta


def _rms_image(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6) * weight


def _stem_reference(state, images):
    x = images
    for i in range(4):
        weight = state[f"dino_model.patch_embed.cnn.{i}.conv.weight"]
        x = F.conv2d(x, weight, stride=2, padding=weight.shape[-1] // 2)
        if i < 3:
            x = F.silu(_rms_image(x, state[f"dino_model.patch_embed.cnn.{i}.norm.weight"]))
    return x.permute(0, 2, 3, 1)


def _linear_attention(x, qkv_weight, proj_weight):
    batch, width, height, wide = x.shape
    qkv = F.conv2d(x, qkv_weight).reshape(batch, width // 32, 3, 32, height * wide)
    q, k, v = F.relu(qkv[:, :, 0]), F.relu(qkv[:, :, 1]), qkv[:, :, 2]
    scores = torch.einsum("bhdn,bhdm->bhnm", q, k)
    out = torch.einsum("bhnm,bhem->bhen", scores, v) / (scores.sum(-1).unsqueeze(2) + 1e-15)
    return F.conv2d(out.reshape(batch, width, height, wide), proj_weight)


def _decoder_reference(state, grid):
    x = F.conv2d(grid, state["decoder.project_in.main.conv.weight"], state["decoder.project_in.main.conv.bias"],
                 padding=1) + grid.repeat_interleave(WIDTHS[-1] // D, dim=1)
    for k in range(len(WIDTHS)):
        prefix = f"decoder.stages.{k}.op_list."
        ops = sorted({int(key[len(prefix):].split(".")[0]) for key in state if key.startswith(prefix)})
        for index in ops:
            p = f"{prefix}{index}."
            if p + "main.conv.conv.weight" in state:
                weight = state[p + "main.conv.conv.weight"]
                main = F.pixel_shuffle(F.conv2d(x, weight, state[p + "main.conv.conv.bias"], padding=1), 2)
                x = main + F.pixel_shuffle(x.repeat_interleave(weight.shape[0] // x.shape[1], dim=1), 2)
            elif p + "main.conv1.conv.weight" in state:
                h = F.silu(F.conv2d(x, state[p + "main.conv1.conv.weight"], state[p + "main.conv1.conv.bias"], padding=1))
                h = F.conv2d(h, state[p + "main.conv2.conv.weight"], padding=1)
                x = x + _rms_image(h, state[p + "main.conv2.norm.weight"])
            else:
                c = p + "context_module.main."
                x = x + _linear_attention(x, state[c + "qkv.conv.weight"], state[c + "proj.conv.weight"])
                m = p + "local_module.main."
                h = F.silu(F.conv2d(x, state[m + "inverted_conv.conv.weight"], state[m + "inverted_conv.conv.bias"]))
                h = F.conv2d(h, state[m + "depth_conv.conv.weight"], state[m + "depth_conv.conv.bias"], padding=1,
                             groups=h.shape[1])
                value, gate = h.chunk(2, dim=1)
                x = x + F.conv2d(value * F.silu(gate), state[m + "point_conv.conv.weight"])
    x = F.relu(_rms_image(x, state["decoder.project_out.op_list.0.weight"]))
    return F.conv2d(x, state["decoder.project_out.op_list.2.conv.weight"],
                    state["decoder.project_out.op_list.2.conv.bias"], padding=1)


@pytest.fixture(scope="module")
def official():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        vit = create_vit("vit_tiny_patch16_dinov3_qkvb", 64)
    torch.manual_seed(1)
    state = {**_official_stem(), **_meta_vit(vit), **_official_decoder()}
    return state, vit


def test_config_is_read_off_the_shapes(official):
    state, _ = official
    assert is_official(state)
    config = infer_config(state)
    assert config.vit == "vit_tiny_patch16_dinov3_qkvb" and config.stem_norm == "image"
    decoder = config.decoder
    assert decoder.widths == WIDTHS and decoder.depths == (1,) * 5 and decoder.blocks == KINDS
    assert (decoder.norm, decoder.vit_norm, decoder.attention_scales, decoder.upsample, decoder.out_act,
            decoder.in_shortcut) == ("image", False, (), "pixelshuffle", "relu", True)


def test_every_official_key_has_a_destination(official):
    state, _ = official
    ours, vit = map_official(state)
    assert len(ours) + len(vit) == len(state)
    assert all(k.startswith(("encoder.stem.", "decoder.")) for k in ours)


def test_mapped_model_computes_what_the_release_computes(official, tmp_path):
    state, vit = official
    path = tmp_path / "dino_sae_release.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, path)
    model = load_autoencoder(path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        stem = model.encoder.stem(images)
        torch.testing.assert_close(stem, _stem_reference(state, images), rtol=1e-4, atol=1e-4)
        latents = F.normalize(torch.randn(2, 16, D), dim=-1)
        grid = latents.transpose(1, 2).reshape(2, D, 4, 4) * math.sqrt(D)
        expected = _decoder_reference(state, grid) * 0.5 + 0.5
        torch.testing.assert_close(model.decode(latents), expected, rtol=1e-4, atol=1e-4)
    for key, value in vit.state_dict().items():
        if not key.startswith("patch_embed."):
            assert torch.equal(model.encoder.vit.state_dict()[key], value), key


def test_release_without_vit_weights_needs_teacher_weights(official, tmp_path):
    state, vit = official
    path = tmp_path / "no_vit.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("dino_model.") or "patch_embed" in k}, path)
    with pytest.raises(OfficialFormatError, match="--teacher-weights"):
        load_autoencoder(path)
    from safetensors.torch import save_file

    teacher = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, teacher)
    model = load_autoencoder(path, teacher_weights=teacher)
    assert torch.equal(model.encoder.vit.patch_embed.proj.weight, vit.patch_embed.proj.weight)


def test_unknown_official_keys_are_errors(official):
    state, _ = official
    with pytest.raises(OfficialFormatError, match="unrecognized"):
        map_official({**state, "decoder.stages.0.op_list.0.context_module.main.extra.weight": torch.ones(1)})
