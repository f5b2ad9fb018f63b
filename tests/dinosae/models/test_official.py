"""Official release files reconstruct exactly as the release's own forward pass does.

No released file is available offline, so these tests build files with the
release's key names and shapes and trained-like weights (``official_reference``),
load them the way a user does (``--ckpt FILE`` with the settings JSON beside
it), and compare the whole reconstruction with an independent re-derivation of
the release's forward pass, in float64.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings

import pytest
import torch
from safetensors.torch import save_file

from dinosae.models.loading import load_model
from dinosae.models.official import OfficialFormatError, infer_config, is_official, map_official
from dinosae.models.vit import IMAGENET_MEAN, IMAGENET_STD, RandomTeacherWarning, create_vit

import official_reference as ref

VIT_S = dict(dim=384, heads=6, depth=12)
VIT_L_SHAPED = dict(dim=1024, heads=16, depth=2)  # ViT-L's width and heads, two blocks
RES_VIT = ("res", "res", "res", "vit", "vit")
SIGNED, IMAGENET = ("signed", "signed"), ("imagenet", "unit")  # (pixel_input, pixel_output)
VARIANTS = {
    "vit-s, silu, pixel shuffle": (ref.Release(
        **VIT_S, widths=(24, 48, 96, 384, 384), depths=(1, 1, 1, 1, 1), blocks=RES_VIT), SIGNED),
    "vit-s, relu, interpolate, first stage empty": (ref.Release(
        **VIT_S, widths=(8, 16, 32, 64, 64), depths=(0, 2, 1, 1, 1), blocks=RES_VIT, act="relu",
        upsample="interpolate", in_shortcut=False), IMAGENET),
    "vit-l shaped, first stage empty, no upsample shortcut": (ref.Release(
        **VIT_L_SHAPED, widths=(8, 16, 32, 64, 64), depths=(0, 1, 1, 1, 1), blocks=RES_VIT, in_shortcut=False,
        upsample_shortcut=False), SIGNED),
    "vit-l shaped, relu head without norm": (ref.Release(
        **VIT_L_SHAPED, widths=(32, 64, 256, 1024, 1024), depths=(1, 1, 1, 1, 1), blocks=RES_VIT, act="relu",
        out_act="silu", out_norm=False), IMAGENET),
}
PIXELS = {  # how the release's model is fed and read, per convention
    SIGNED: (lambda x: 2 * x - 1, lambda y: y * 0.5 + 0.5),
    IMAGENET: (lambda x: (x - torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1))
               / torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1), lambda y: y),
}


def write_release(tmp_path, release: ref.Release, state, settings=None, name="release.pth", wrap=True):
    path = tmp_path / name
    # An EMA beside the raw weights, as trainers save them: the EMA must be the one loaded.
    corrupted = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    torch.save({"model": corrupted, "ema": {"module." + k: v for k, v in state.items()}, "step": 7} if wrap
               else state, path)
    if settings is not None:
        path.with_suffix(".json").write_text(json.dumps(settings))
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_files_reconstruct_as_the_release_computes(variant, tmp_path, caplog):
    release, pixels = VARIANTS[variant]
    state = ref.release_state(release, seed=len(variant))
    settings = {**release.settings, "pixel_input": pixels[0], "pixel_output": pixels[1], "image_size": 64}
    path = write_release(tmp_path, release, state, settings)
    with caplog.at_level(logging.INFO, logger="dinosae"):
        model = load_model(path, kind="autoencoder").double()
    assert "EMA weights under 'ema'" in caplog.text
    assert model.config.latent_scale == "raw_tokens" and model.config.vit.endswith("_qkvb")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    feed, read = PIXELS[pixels]
    with torch.no_grad():
        expected = read(ref.forward(state, release, feed(images)))
        tokens = ref.encode(state, release, feed(images))
        torch.testing.assert_close(model.encoder.student_tokens(images), tokens, rtol=1e-5, atol=1e-5)
        ours = model(images)
    scale = expected.abs().max()
    assert (ours - expected).abs().max() <= 1e-5 * scale, variant
    # Trained-like norms move the tokens off norm sqrt(D): decoding their unit directions times sqrt(D),
    # this toolkit's own convention, would be far off. The test would see that bug.
    assert not torch.allclose(tokens.norm(dim=-1), torch.full_like(tokens[..., 0], release.dim ** 0.5), rtol=0.05)
    model.config = dataclasses.replace(model.config, latent_scale="sqrt_dim")
    with torch.no_grad():
        assert (model(images) - expected).abs().max() > 1e-2 * scale


def test_the_config_is_read_off_the_weights(tmp_path):
    release = VARIANTS["vit-s, relu, interpolate, first stage empty"][0]
    state = {k: v.float() for k, v in ref.release_state(release).items()}
    assert is_official(state)
    config = infer_config(state, {**release.settings, "pixel_input": "signed", "pixel_output": "signed"})
    decoder = config.decoder
    assert (config.vit, config.vit_depth, config.stem_norm, config.latent_scale) == (
        "vit_small_patch16_dinov3_qkvb", 12, "image", "raw_tokens")
    assert decoder.widths[1:] == release.widths[1:] and decoder.depths == release.depths
    assert (decoder.norm, decoder.vit_norm, decoder.upsample, decoder.upsample_shortcut, decoder.in_shortcut,
            decoder.out_norm, decoder.act, decoder.out_act) == (
        "image", False, "interpolate", "duplicate", False, True, "relu", "relu")
    ours, vit = map_official(state)
    assert len(ours) + len(vit) == len(state)
    assert all(k.startswith(("encoder.stem.", "decoder.")) for k in ours)


@pytest.mark.parametrize("settings, missing", [
    (None, "decoder.act"),
    ({"decoder": {"act": "silu"}, "pixel_input": "signed", "pixel_output": "signed"}, "decoder.out_act"),
    ({"decoder": {"act": "silu", "out_act": "relu"}, "pixel_output": "signed"}, "pixel_input"),
])
def test_settings_the_weights_cannot_show_are_required(settings, missing, tmp_path):
    release = VARIANTS["vit-s, silu, pixel shuffle"][0]
    path = write_release(tmp_path, release, ref.release_state(release), settings)
    with pytest.raises(OfficialFormatError, match=f"cannot tell .*{missing}"):
        load_model(path, kind="autoencoder")


def test_a_file_without_its_teacher_refuses_every_use_of_it(tmp_path):
    release = VARIANTS["vit-s, silu, pixel shuffle"][0]
    state = {k: v.float() for k, v in ref.release_state(release).items()}
    settings = {**release.settings, "pixel_input": "signed", "pixel_output": "signed", "image_size": 64}
    path = write_release(tmp_path, release, state, settings, wrap=False)
    model = load_model(path, kind="autoencoder")
    images = torch.rand(1, 3, 64, 64)
    assert model(images).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="carries no patch embedding for it; pass --teacher-weights"):
        model.encoder.teacher_tokens(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        teacher = create_vit("vit_small_patch16_dinov3_qkvb", 64, depth=12)
    teacher_file = tmp_path / "dinov3.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, teacher_file)
    model = load_model(path, kind="autoencoder", teacher_weights=teacher_file)
    assert model.encoder.teacher_tokens(images).shape == (1, 16, 384)
    assert torch.equal(model.encoder.vit.patch_embed.proj.weight, teacher.patch_embed.proj.weight)
    assert torch.equal(model.encoder.vit.blocks[0].attn.qkv.weight.float(),
                       state["dino_model.blocks.0.attn.qkv.weight"])  # the release's ViT, not the teacher file's


def test_meta_weights_with_q_v_biases_are_refused_by_a_vit_without_them(tmp_path):
    release = VARIANTS["vit-s, silu, pixel shuffle"][0]
    meta = {k[len(ref.VIT):]: v.float() for k, v in ref.release_state(release).items()
            if k.startswith(ref.VIT) and not k.startswith(ref.STEM)}
    meta["patch_embed.proj.weight"], meta["patch_embed.proj.bias"] = torch.randn(384, 3, 16, 16), torch.zeros(384)
    path = tmp_path / "dinov3_meta.pth"
    torch.save(meta, path)
    with pytest.raises(ValueError, match="non-zero q/v biases .* use vit_small_patch16_dinov3_qkvb"):
        create_vit("vit_small_patch16_dinov3", 64, path)
    vit = create_vit("vit_small_patch16_dinov3_qkvb", 64, path)
    q, _, v = meta["blocks.0.attn.qkv.bias"].chunk(3)
    assert torch.equal(vit.blocks[0].attn.q_bias, q) and torch.equal(vit.blocks[0].attn.v_bias, v)


def test_unknown_official_keys_are_errors():
    release = VARIANTS["vit-s, silu, pixel shuffle"][0]
    state = ref.release_state(release)
    with pytest.raises(OfficialFormatError, match="unrecognized"):
        map_official({**state, "decoder.stages.0.op_list.1.context_module.main.extra.weight": torch.ones(1)})


def _release_to_fine_tune(tmp_path):
    """A 64 px release file of ViT-S (float32) that ``train ae --init`` fine-tunes, and its state."""
    release = VARIANTS["vit-s, relu, interpolate, first stage empty"][0]
    state = {k: v.float() for k, v in ref.release_state(release).items()}
    settings = {**release.settings, "pixel_input": "imagenet", "pixel_output": "unit", "image_size": 64}
    return write_release(tmp_path, release, state, settings), state


def test_an_official_file_starts_a_stage_with_its_own_config(tmp_path, photos):
    """--init FILE fine-tunes the release's decoder; without a teacher, stages that need one refuse."""
    from dinosae.config import AETrainConfig, model_config
    from dinosae.io.checkpoint import load_checkpoint
    from dinosae.train.autoencoder import train_autoencoder

    path, state = _release_to_fine_tune(tmp_path)
    _, preset = model_config("ae-tiny")
    fast = dict(steps=2, batch_size=2, lpips_weight=0.0, num_workers=0, log_every=1, image_every=10**6)
    with pytest.raises(ValueError, match="the alignment loss needs the DINOv3 teacher"):
        train_autoencoder(tmp_path / "s2", photos["heldout"], preset, AETrainConfig(stage=2, **fast), init=path,
                          device="cpu")
    with pytest.raises(ValueError, match="the DINO discriminator needs the DINOv3 teacher"):
        train_autoencoder(tmp_path / "s3", photos["heldout"], preset, AETrainConfig(stage=3, **fast), init=path,
                          device="cpu")
    train_autoencoder(tmp_path / "s3", photos["heldout"], preset, AETrainConfig(stage=3, gan_weight=0.0, **fast),
                      init=path, device="cpu")
    meta = load_checkpoint(tmp_path / "s3").meta
    assert meta["ae_config"]["vit"] == "vit_small_patch16_dinov3_qkvb"
    assert meta["ae_config"]["latent_scale"] == "raw_tokens" and meta["teacher_missing"]
    model = load_model(tmp_path / "s3", kind="autoencoder")
    with pytest.raises(ValueError, match="needs the DINOv3 teacher"):
        model.encoder.teacher_tokens(torch.rand(1, 3, 64, 64))
    stem = model.encoder.stem.layers[0].weight
    torch.testing.assert_close(stem, state["dino_model.patch_embed.cnn.0.conv.weight"])  # stage 3 keeps the stem


def test_a_stage_after_an_official_file_keeps_knowing_the_teacher_is_missing(tmp_path, photos):
    """--init RUN, RUN fine-tuned from an official file: its patch embedding is a random stand-in, not a teacher."""
    from dinosae.config import AEConfig, AETrainConfig, from_dict, model_config
    from dinosae.io.checkpoint import load_checkpoint
    from dinosae.train.autoencoder import train_autoencoder

    path, _ = _release_to_fine_tune(tmp_path)
    _, preset = model_config("ae-tiny")
    fast = dict(steps=1, batch_size=2, lpips_weight=0.0, num_workers=0, log_every=1, image_every=10**6)
    train_autoencoder(tmp_path / "s3", photos["heldout"], preset, AETrainConfig(stage=3, gan_weight=0.0, **fast),
                      init=path, device="cpu")
    preset = from_dict(AEConfig, load_checkpoint(tmp_path / "s3").meta["ae_config"])  # the release's, as resolved
    with pytest.raises(ValueError, match="the DINO discriminator needs the DINOv3 teacher"):
        train_autoencoder(tmp_path / "s4", photos["heldout"], preset, AETrainConfig(stage=4, **fast),
                          init=tmp_path / "s3", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        teacher = create_vit("vit_small_patch16_dinov3_qkvb", image_size=64)
    generator = torch.Generator().manual_seed(0)
    teacher_state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in teacher.state_dict().items()}
    torch.save(teacher_state, tmp_path / "teacher.pth")
    train_autoencoder(tmp_path / "s4", photos["heldout"], preset, AETrainConfig(stage=4, **fast),
                      init=tmp_path / "s3", teacher_weights=tmp_path / "teacher.pth", device="cpu")
    assert load_checkpoint(tmp_path / "s4").meta["teacher_missing"] is None
    model = load_model(tmp_path / "s4", kind="autoencoder")
    torch.testing.assert_close(model.encoder.vit.patch_embed.proj.weight, teacher_state["patch_embed.proj.weight"],
                               rtol=0, atol=0)
    assert model.encoder.teacher_tokens(torch.rand(1, 3, 64, 64)).shape == (1, 16, 384)
