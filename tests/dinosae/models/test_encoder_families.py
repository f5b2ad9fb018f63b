"""Frozen encoders other than DINOv3 (issue 22): DINOv2 with registers (patch 14), SigLIP2, MAE and CLIP from
timm, with random weights and two blocks. What only real weights can show (the tokens' meaning, the
alignment's and the probe's numbers) is left to users; see the README."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

import dinosae
from dinosae.cli.evaluation import check_magnitude, eval_probe
from dinosae.config import AE_PRESETS, AETrainConfig, model_config
from dinosae.config.autoencoder import ENCODER_FAMILIES
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.vit import create_vit, load_vit_state, patch_size, run_on_grid, standardize, teacher_grid

# One timm model per family and patch size: the smallest registered size, and CLIP-L for CLIP's patch 14.
VITS = {"dinov2": ENCODER_FAMILIES["dinov2"]["S"], "siglip2": ENCODER_FAMILIES["siglip2"]["B"],
        "mae": ENCODER_FAMILIES["mae"]["B"], "clip": ENCODER_FAMILIES["clip"]["B"],
        "clip-patch14": ENCODER_FAMILIES["clip"]["L"]}
SMALL = {"image_size": 64, "vit_depth": 2, "decoder": AE_PRESETS["tiny"].decoder, "disc_depths": (0, 1),
         "stem_norm": "image"}


def _vit(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = create_vit(name, image_size=64, depth=2)
    # Random but not initial weights: timm zero-initializes some biases and class tokens.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return vit


@pytest.mark.parametrize("name", VITS.values(), ids=VITS.keys())
def test_the_teacher_path_is_the_vits_own_forward(name):
    """On a 4 x 4 grid at 64 px: a patch-14 ViT sees the image at 56 px, standardized with its own statistics."""
    vit = _vit(name)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tokens, taps = run_on_grid(vit, teacher_grid(vit, images), depths=(0,))
    side = 4 * patch_size(vit)
    resized = images if side == 64 else F.interpolate(images, size=(side, side), mode="bicubic", antialias=True)
    reference = vit.forward_features(standardize(resized, vit.pretrained_cfg["mean"], vit.pretrained_cfg["std"]))
    assert tokens.shape == (2, 16, vit.embed_dim) and taps[0].shape == tokens.shape
    torch.testing.assert_close(tokens, reference[:, vit.num_prefix_tokens:])


def test_each_family_standardizes_with_its_own_statistics():
    means = {family: _vit(name).pretrained_cfg["mean"] for family, name in VITS.items()}
    assert means["dinov2"] == means["mae"] == (0.485, 0.456, 0.406)
    assert means["siglip2"] == (0.5, 0.5, 0.5) and means["clip"][0] == pytest.approx(0.4815, abs=1e-4)


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_autoencoder_of_each_family(family):
    size = "S" if "S" in ENCODER_FAMILIES[family] else "B"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinosae.create_model(f"ae-{size}-{family}", **SMALL)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    latents = model.encode(images)
    assert latents.shape == (2, 16, model.latent_dim)
    torch.testing.assert_close(latents.norm(dim=-1), torch.ones(2, 16))
    assert model.encoder.teacher_tokens(images).shape == latents.shape
    logits = DinoDiscriminator(model.latent_dim, depths=(0, 1))(images, model.encoder.vit)
    model.decode(latents).square().mean().backward()
    logits.sum().backward()
    assert logits.shape[0] == 2 and all(p.grad is None for p in model.encoder.vit.parameters())
    assert any(p.grad is not None for p in model.encoder.stem.parameters())


def test_dinov2_weights_load_in_timm_and_in_meta_names():
    """Meta's release names the registers ``register_tokens``, keeps a ``mask_token``, and stores the class
    token's position in front of the patches' (timm folds it into the class token)."""
    source = _vit(VITS["dinov2"])
    generator = torch.Generator().manual_seed(3)
    grid = torch.randn(1, 4, 4, source.embed_dim, generator=generator)
    expected, _ = run_on_grid(source, grid)
    timm_names = source.state_dict()
    class_position = 0.1 * torch.randn(1, 1, source.embed_dim, generator=generator)
    meta_names = {("register_tokens" if key == "reg_token" else key): value for key, value in timm_names.items()}
    meta_names.update(cls_token=timm_names["cls_token"] - class_position, mask_token=torch.zeros(1, source.embed_dim),
                      pos_embed=torch.cat([class_position, timm_names["pos_embed"]], dim=1))
    for state, tolerance in ((timm_names, 0.0), (meta_names, 1e-5)):
        target = _vit(VITS["dinov2"])
        assert load_vit_state(target, dict(state), source="test") == []
        torch.testing.assert_close(run_on_grid(target, grid)[0], expected, rtol=tolerance, atol=tolerance)


def test_mae_weights_load_from_their_release_wrapper():
    source = _vit(VITS["mae"])
    grid = torch.randn(1, 4, 4, source.embed_dim, generator=torch.Generator().manual_seed(4))
    target = _vit(VITS["mae"])
    assert load_vit_state(target, {"model": source.state_dict()}, source="mae_pretrain_vit_base.pth") == []
    torch.testing.assert_close(run_on_grid(target, grid)[0], run_on_grid(source, grid)[0], rtol=0, atol=0)


def _openai_clip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm CLIP ViT's weights as OpenAI's release names them, text tower and projection included."""
    swaps = [("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"), ("blocks.", "transformer.resblocks."),
             ("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"),
             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]
    released = {"visual.class_embedding": state["cls_token"][0, 0],
                "visual.positional_embedding": state["pos_embed"][0],
                "visual.proj": torch.ones(state["cls_token"].shape[-1], 8),
                "token_embedding.weight": torch.ones(4, 8)}
    for key, value in state.items():
        if key in ("cls_token", "pos_embed"):
            continue
        if key.startswith("norm."):
            key = key.replace("norm.", "ln_post.")
        for timm_name, openai_name in swaps:
            key = key.replace(timm_name, openai_name)
        released[f"visual.{key}"] = value
    return released


def test_clip_weights_load_in_timm_and_in_openai_names():
    source = _vit(VITS["clip"])
    grid = torch.randn(1, 4, 4, source.embed_dim, generator=torch.Generator().manual_seed(5))
    for state in (source.state_dict(), _openai_clip_names(source.state_dict())):
        target = _vit(VITS["clip"])
        assert load_vit_state(target, state, source="ViT-B-16.pt") == []
        torch.testing.assert_close(run_on_grid(target, grid)[0], run_on_grid(source, grid)[0], rtol=0, atol=0)


def _big_vision_siglip(vit) -> dict[str, object]:
    """A timm SigLIP ViT's weights as big_vision's JAX release stores them (``params/img/...``)."""
    dim, heads = vit.embed_dim, vit.blocks[0].attn.num_heads

    def heads_kernel(weight):  # (heads * head_dim, D) -> (D, heads, head_dim)
        return weight.T.reshape(dim, heads, -1)

    files = {"embedding/kernel": vit.patch_embed.proj.weight.permute(2, 3, 1, 0),
             "embedding/bias": vit.patch_embed.proj.bias, "pos_embedding": vit.pos_embed,
             "Transformer/encoder_norm/scale": vit.norm.weight, "Transformer/encoder_norm/bias": vit.norm.bias}
    pool, head = vit.attn_pool, "MAPHead_0/"
    files.update({f"{head}probe": pool.latent, f"{head}LayerNorm_0/scale": pool.norm.weight,
                  f"{head}LayerNorm_0/bias": pool.norm.bias,
                  f"{head}MultiHeadDotProductAttention_0/query/kernel": heads_kernel(pool.q.weight),
                  f"{head}MultiHeadDotProductAttention_0/query/bias": pool.q.bias.reshape(heads, -1),
                  f"{head}MultiHeadDotProductAttention_0/out/kernel": pool.proj.weight.reshape(dim, heads, -1)
                  .permute(1, 2, 0), f"{head}MultiHeadDotProductAttention_0/out/bias": pool.proj.bias})
    for name, weight, bias in zip(("key", "value"), pool.kv.weight.chunk(2), pool.kv.bias.chunk(2)):
        files[f"{head}MultiHeadDotProductAttention_0/{name}/kernel"] = heads_kernel(weight)
        files[f"{head}MultiHeadDotProductAttention_0/{name}/bias"] = bias.reshape(heads, -1)
    for index, layer in enumerate((pool.mlp.fc1, pool.mlp.fc2)):
        files.update({f"{head}MlpBlock_0/Dense_{index}/kernel": layer.weight.T,
                      f"{head}MlpBlock_0/Dense_{index}/bias": layer.bias})
    for index, block in enumerate(vit.blocks):
        prefix = f"Transformer/encoderblock_{index}/"
        attention = f"{prefix}MultiHeadDotProductAttention_0/"
        files.update({f"{prefix}LayerNorm_0/scale": block.norm1.weight, f"{prefix}LayerNorm_0/bias": block.norm1.bias,
                      f"{prefix}LayerNorm_1/scale": block.norm2.weight, f"{prefix}LayerNorm_1/bias": block.norm2.bias,
                      f"{attention}out/kernel": block.attn.proj.weight.reshape(dim, heads, -1).permute(1, 2, 0),
                      f"{attention}out/bias": block.attn.proj.bias})
        for name, weight, bias in zip(("query", "key", "value"), block.attn.qkv.weight.chunk(3),
                                      block.attn.qkv.bias.chunk(3)):
            files[f"{attention}{name}/kernel"] = heads_kernel(weight)
            files[f"{attention}{name}/bias"] = bias.reshape(heads, -1)
        for layer_index, layer in enumerate((block.mlp.fc1, block.mlp.fc2)):
            files.update({f"{prefix}MlpBlock_0/Dense_{layer_index}/kernel": layer.weight.T,
                          f"{prefix}MlpBlock_0/Dense_{layer_index}/bias": layer.bias})
    return {f"params/img/{key}": value.detach().numpy() for key, value in files.items()}


def test_siglip2_weights_load_from_big_visions_npz(tmp_path):
    import numpy as np

    source = _vit(VITS["siglip2"])
    np.savez(tmp_path / "siglip2.npz", **_big_vision_siglip(source))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights given: no random-teacher warning
        target = create_vit(VITS["siglip2"], image_size=64, weights=tmp_path / "siglip2.npz", depth=2)
    grid = torch.randn(1, 4, 4, source.embed_dim, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(run_on_grid(target, grid)[0], run_on_grid(source, grid)[0], rtol=0, atol=0)
    truncated = {k: v for k, v in _big_vision_siglip(source).items() if "encoderblock_1" not in k}
    np.savez(tmp_path / "truncated.npz", **truncated)
    with pytest.raises(ValueError, match="truncated.npz' do not fit VisionTransformer"):
        create_vit(VITS["siglip2"], image_size=64, weights=tmp_path / "truncated.npz", depth=2)


def test_unknown_keys_are_refused():
    target = _vit(VITS["mae"])
    state = {**target.state_dict(), "blocks.0.attn.extra": torch.ones(2)}
    with pytest.raises(ValueError, match="does not: \\['blocks.0.attn.extra'\\]"):
        load_vit_state(target, state, source="weights.pth")


@pytest.fixture(scope="module", params=list(ENCODER_FAMILIES))
def family_run(request, tmp_path_factory, three_photos):
    from dinosae.train.autoencoder import train_autoencoder

    family = request.param
    size = "S" if "S" in ENCODER_FAMILIES[family] else "B"
    run = tmp_path_factory.mktemp(f"run_{family}")
    config = AETrainConfig(steps=1, batch_size=4, lr=3e-4, lpips_weight=0.0, num_workers=0, image_every=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_autoencoder(run, three_photos / "train", model_config(f"ae-{size}-{family}", **SMALL)[1], config,
                          device="cpu")
    return run


def test_check_magnitude_and_eval_probe_run_unchanged(family_run, three_photos, tmp_path):
    def last_json(command, args):
        result = CliRunner().invoke(command, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    magnitude = last_json(check_magnitude, ["--ckpt", family_run, "--data", three_photos, "--out", tmp_path / "m",
                                            "--points", 3, "--num-workers", 0, "--json"])
    assert abs(magnitude["psnr_change"]) < 1e-4
    probe = last_json(eval_probe, ["--ckpt", family_run, "--data", three_photos, "--json", "--weight-decay", "0.01",
                                   "--sweep", "0.1,1", "--num-workers", "0"])
    assert probe["classes"] == 3 and 0.0 <= probe["probe_latent"] <= 1.0 and 0.0 <= probe["probe_teacher"] <= 1.0


@pytest.mark.parametrize(("family", "written"), [("dinov2", "DINOv2"), ("siglip2", "SigLIP"), ("mae", "MAE"),
                                                 ("clip", "CLIP")])
def test_a_missing_teacher_is_refused_by_its_familys_name(family, written):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinosae.create_model(f"ae-B-{family}", **SMALL)
    model.encoder.teacher_missing = "the file carries no patch embedding"
    with pytest.raises(ValueError, match=f"the alignment loss needs the {written} teacher, but the file"):
        model.encoder.require_teacher("the alignment loss")
