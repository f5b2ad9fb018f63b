"""The autoencoder's modules: shapes, spheres, frozen parts, the official variants, bad input."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dinosae.config import AE_PRESETS, DecoderConfig, preset
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.decoder import Decoder
from dinosae.models.decoder_blocks import EfficientViTBlock, LinearAttention, Upsample
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.layers import RMSNorm2d
from dinosae.models.stem import HierarchicalStem, PatchStem
from dinosae.models.vit import RandomTeacherWarning


@pytest.fixture(scope="module")
def tiny_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return SphericalAutoencoder(preset(AE_PRESETS, "tiny"))


def test_hierarchical_stem_matches_the_paper():
    stem = HierarchicalStem(dim=48)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 64, 7, 2), (64, 128, 3, 2), (128, 256, 3, 2), (256, 48, 3, 2)]
    assert sum(isinstance(m, RMSNorm2d) for m in stem.modules()) == 3
    assert stem(torch.randn(2, 3, 48, 32)).shape == (2, 3, 2, 48)
    assert PatchStem(48)(torch.randn(2, 3, 48, 32)).shape == (2, 3, 2, 48)


def test_rms_norms_normalize_over_their_axes():
    x = torch.randn(2, 6, 5, 4) * 3
    pixel = RMSNorm2d(6)(x)
    torch.testing.assert_close(pixel.pow(2).mean(1), torch.ones(2, 5, 4), atol=1e-4, rtol=0)
    image = RMSNorm2d(6, over="image")(x)
    torch.testing.assert_close(image.pow(2).mean((1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert image.shape == x.shape and RMSNorm2d(6, over="image").bias is None


def test_latents_are_unit_tokens_and_only_the_stem_trains(tiny_model):
    images = torch.rand(3, 3, 64, 64)
    z = tiny_model.encode(images)
    assert z.shape == (3, 16, 192)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3, 16), atol=4e-7, rtol=0)
    tiny_model.train()
    assert not tiny_model.encoder.vit.training
    trainable = {n.split(".")[0] for n, p in tiny_model.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"stem"}
    assert all(not p.requires_grad for p in tiny_model.encoder.vit.parameters())


def test_student_with_the_patch_embedding_reproduces_the_teacher(tiny_model):
    # With the ViT's own embedding as the "stem", student and teacher are one path.
    from dinosae.models.vit import run_on_grid, standardize, teacher_grid

    images = torch.rand(2, 3, 64, 64)
    vit = tiny_model.encoder.vit
    student, _ = run_on_grid(vit, teacher_grid(vit, images))
    torch.testing.assert_close(student, tiny_model.encoder.teacher_tokens(images))
    reference = vit.forward_features(standardize(images))[:, vit.num_prefix_tokens:]
    torch.testing.assert_close(student, reference)


@pytest.mark.parametrize("depths", [(1, 1, 1, 1, 1), (0, 1, 1, 1, 1)], ids=["convolution head", "upsampling head"])
def test_decoder_shapes_and_input_checks(depths):
    config = DecoderConfig(widths=(8, 16, 16, 32, 32), depths=depths, head_dim=8)
    decoder = Decoder(12, config)
    z = F.normalize(torch.randn(2, 9, 12), dim=-1)
    assert decoder(z).shape == (2, 3, 48, 48)
    assert len(decoder.stages) == sum(d > 0 for d in depths)
    with pytest.raises(ValueError, match="square grid"):
        decoder(torch.randn(2, 8, 12))
    with pytest.raises(ValueError, match=r"\(B, N, 12\)"):
        decoder(torch.randn(2, 9, 10))


@pytest.mark.parametrize("fields, message", [
    (dict(widths=(8, 16), depths=(1,), blocks=("res", "res")), "differ in length"),
    (dict(depths=(1, 0, 1, 1, 1)), "only the first decoder stage may have depth 0"),
    (dict(act="swish"), "unknown decoder act 'swish'"),
    (dict(blocks=("res", "res", "res", "vit", "mlp")), "unknown decoder blocks"),
])
def test_decoder_configs_that_cannot_be_built_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**fields)


@pytest.mark.parametrize("mode", ["interpolate", "pixelshuffle"])
def test_upsample_starts_from_the_duplicating_shortcut(mode):
    block = Upsample(8, 4, mode)
    torch.nn.init.zeros_(block.conv.weight)
    torch.nn.init.zeros_(block.conv.bias)
    x = torch.randn(1, 8, 3, 3)
    expected = F.pixel_shuffle(x.repeat_interleave(2, dim=1), 2)
    torch.testing.assert_close(block(x), expected)


def test_linear_attention_matches_softmax_free_definition():
    attention = LinearAttention(8, head_dim=4, scales=(), norm=None)
    x = torch.randn(2, 8, 3, 3)
    qkv = attention.qkv(x).reshape(2, 2, 3, 4, 9)
    q, k, v = F.relu(qkv[:, :, 0]), F.relu(qkv[:, :, 1]), qkv[:, :, 2]
    weights = torch.einsum("bhdn,bhdm->bhnm", q, k)
    out = torch.einsum("bhnm,bhem->bhen", weights, v) / (weights.sum(-1).unsqueeze(2) + 1e-15)
    torch.testing.assert_close(attention(x), attention.proj(out.reshape(2, 8, 3, 3)))


def test_efficientvit_block_without_norms_has_no_norm_parameters():
    block = EfficientViTBlock(16, head_dim=8, scales=(), norm=None)
    assert not any("norm" in name for name, _ in block.named_parameters())


def test_discriminator_gives_logits_per_token_and_depth(tiny_model):
    discriminator = DinoDiscriminator(192, depths=(1, 5, 11))
    logits = discriminator(torch.rand(2, 3, 64, 64), tiny_model.encoder.vit)
    assert logits.shape == (2, 3 * 16)
    with pytest.raises(ValueError, match="exceed"):
        DinoDiscriminator(192, depths=(12,))(torch.rand(1, 3, 32, 32), tiny_model.encoder.vit)


def test_discriminator_runs_the_vit_only_to_its_deepest_tap(tiny_model):
    vit = tiny_model.encoder.vit
    ran = []
    handles = [module.register_forward_hook(lambda module, *_: ran.append(module))
               for module in (*vit.blocks, vit.norm)]
    try:
        DinoDiscriminator(192, depths=(1, 5))(torch.rand(1, 3, 64, 64), vit)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == list(vit.blocks[:6])


@pytest.mark.parametrize("shape, message", [((2, 3, 60, 64), "multiples of 16"), ((2, 1, 64, 64), "B, 3, H, W")])
def test_encoder_rejects_bad_images(tiny_model, shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.encode(torch.rand(shape))


def test_checkpoint_weights_leave_out_a_file_backed_vit(tiny_model):
    assert any(k.startswith("encoder.vit.") for k in tiny_model.weights_to_save())
    tiny_model.teacher_weights = "dino.pth"
    try:
        assert not any(k.startswith("encoder.vit.") for k in tiny_model.weights_to_save())
    finally:
        tiny_model.teacher_weights = None


def test_presets_build_with_the_official_decoder_sizes():
    config = preset(AE_PRESETS, "B")
    assert config.decoder.widths == (256, 512, 512, 1024, 1024) and config.decoder.depths == (5, 5, 3, 3, 3)
    decoder = Decoder(768, config.decoder)
    params = sum(p.numel() for p in decoder.parameters())
    assert 150e6 < params < 200e6
    assert 2 ** (len(config.decoder.widths) - 1) == 16 and math.isqrt(256) == 16


@pytest.mark.slow
def test_full_size_b_preset_trains_a_step_at_256px():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        model = SphericalAutoencoder(preset(AE_PRESETS, "B"))
    model.requires_grad_(False)
    model.decoder.requires_grad_(True)
    model.encoder.stem.requires_grad_(True)
    images = torch.rand(2, 3, 256, 256)
    latents = model.encode(images)
    assert latents.shape == (2, 256, 768)
    reconstruction = model.decode(latents)
    assert reconstruction.shape == images.shape
    (reconstruction - images).abs().mean().backward()
    assert model.encoder.stem.layers[0].weight.grad is not None
    assert all(p.grad is None for p in model.encoder.vit.parameters())


def test_latent_conventions_decide_what_the_decoder_takes(tiny_config):
    """sqrt_dim: unit tokens times sqrt(D); raw_tokens: the encoder's tokens as they are, and unit latents
    only at an explicit decode_scale (the HAE paper's s_vae)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SphericalAutoencoder(tiny_config).eval()
    images = torch.rand(2, 3, 64, 64)
    tokens = model.encoder.student_tokens(images)
    units = F.normalize(tokens, dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model.to_pixels(model.decoder(units * 192 ** 0.5)))
        torch.testing.assert_close(model.decode(model.encode(images)), model(images))
        model.config = replace(model.config, latent_scale="raw_tokens")
        torch.testing.assert_close(model(images), model.to_pixels(model.decoder(tokens)))
        with pytest.raises(ValueError, match="needs decode_scale"):
            model.decode(units)
        model.config = replace(model.config, decode_scale=14.0)
        torch.testing.assert_close(model.decode(units), model.to_pixels(model.decoder(units * 14.0)))


def _row_over_column_variation(y: torch.Tensor) -> float:
    return float((y[:, :, 1:] - y[:, :, :-1]).abs().mean() / (y[..., 1:] - y[..., :-1]).abs().mean())


def test_the_duplicating_shortcut_draws_stripes_and_the_averaging_one_does_not():
    """Halving the width, duplication fills each 2x2 block's rows from two different channels (the stripes of
    issue 11); averaging is isotropic, and equals duplication when the width stays."""
    x = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    ratios = {}
    for shortcut in ("duplicate", "average"):
        block = Upsample(16, 8, shortcut=shortcut)
        torch.nn.init.zeros_(block.conv.weight)
        torch.nn.init.zeros_(block.conv.bias)
        with torch.no_grad():
            ratios[shortcut] = _row_over_column_variation(block(x))
    assert ratios["duplicate"] > 1.5 and 0.8 < ratios["average"] < 1.25
    average = Upsample(8, 4, shortcut="average")
    torch.nn.init.zeros_(average.conv.weight)
    torch.nn.init.zeros_(average.conv.bias)
    x = torch.randn(1, 8, 3, 3)
    expected = F.interpolate(x.view(1, 4, 2, 3, 3).mean(2), scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(average(x), expected)
    same = [Upsample(8, 8, shortcut=s) for s in ("duplicate", "average")]
    same[1].load_state_dict(same[0].state_dict())
    torch.testing.assert_close(same[0](x), same[1](x))


def test_a_fresh_tiny_decoder_has_no_directional_bias():
    config = preset(AE_PRESETS, "tiny").decoder
    torch.manual_seed(0)
    with torch.no_grad():
        y = Decoder(192, config)(F.normalize(torch.randn(8, 16, 192), dim=-1) * 192 ** 0.5)
    assert _row_over_column_variation(y) < 1.5
    # The stages alone: the preset's linear patch path would hide the shortcut's stripes.
    config = replace(config, patch_shortcut=False)
    torch.manual_seed(0)
    with torch.no_grad():
        y = Decoder(192, config)(F.normalize(torch.randn(8, 16, 192), dim=-1) * 192 ** 0.5)
    assert _row_over_column_variation(y) < 1.5
    config = replace(config, upsample_shortcut="duplicate")
    torch.manual_seed(0)
    with torch.no_grad():
        y = Decoder(192, config)(F.normalize(torch.randn(8, 16, 192), dim=-1) * 192 ** 0.5)
    assert _row_over_column_variation(y) > 3.0


def test_patch_shortcut_adds_each_tokens_linear_pixel_block():
    torch.manual_seed(0)
    config = DecoderConfig(widths=(8, 16, 16, 32, 32), depths=(0, 1, 1, 1, 1), head_dim=8,
                           upsample_shortcut="average", patch_shortcut=True)
    decoder = Decoder(12, config).double()
    tokens = torch.randn(2, 4, 12, dtype=torch.float64)
    grid = tokens.transpose(1, 2).reshape(2, 12, 2, 2)
    without = decoder(tokens) - F.pixel_shuffle(decoder.patch_out(grid), 16)
    decoder.patch_out = None
    torch.testing.assert_close(without, decoder(tokens), rtol=0, atol=1e-12)
    shortcut = Decoder(12, config).patch_out.double()
    moved = grid.clone()
    moved[:, :, 1, 0] += torch.randn(2, 12, dtype=torch.float64)
    change = (F.pixel_shuffle(shortcut(moved), 16) - F.pixel_shuffle(shortcut(grid), 16)).abs()
    outside = change.clone()
    outside[..., 16:, :16] = 0
    assert change[..., 16:, :16].min() > 0 and outside.max() == 0
