"""The autoencoder's configuration: ViT, stem, decoder, latent and pixel conventions, named sizes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dinosae.config.base import check_fields, check_range

# Pixel conventions at the model's edges. Callers always pass and get images in [0, 1]; these say
# what the stem sees and what the decoder's last convolution predicts.
PIXEL_INPUTS = ("imagenet", "signed", "unit")  # (x - mean) / std with ImageNet's statistics; 2x - 1; x
PIXEL_OUTPUTS = ("signed", "unit")  # the decoder predicts 2x - 1 (DC-AE's convention), or x
# What the decoder takes for a latent token: its unit direction times sqrt(D) ("sqrt_dim"), times a
# fixed number (a float), or the encoder's final-norm token as it is, magnitude included ("raw_tokens").
LATENT_SCALES = ("sqrt_dim", "raw_tokens")
ACTIVATIONS = ("silu", "relu", "relu6", "hswish", "gelu")
NORMS = ("pixel", "image")
UPSAMPLES = ("interpolate", "pixelshuffle")
SHORTCUTS = ("duplicate", "average", None)


@dataclass(frozen=True)
class DecoderConfig:
    """Stage widths, depths and block kinds, from full resolution (index 0) to the latent grid.

    ``blocks[i]`` is ``"res"`` (two 3x3 convolutions) or ``"vit"`` (EfficientViT:
    linear attention + GLU conv MLP, cheap enough at low resolution). Five stages
    upsample by 2 four times: x16, one pixel block per token. As in DC-AE, a first
    stage of depth 0 has no blocks and the output head upsamples instead.

    The remaining fields are DC-AE's variants; the official release's files set
    them (``dinosae.models.official``), and the ones that weights cannot reveal
    (activations) must be stated. ``act`` is the blocks' activation (a ResBlock's
    first convolution, and both of an EfficientViT block's GLU activations);
    ``out_act`` the head's, between its norm and its convolution. ``norm`` is the
    ``RMSNorm2d`` variant (``"pixel"``: DC-AE's trms2d; ``"image"``: the
    official release's), ``vit_norm`` whether EfficientViT blocks have norms.
    ``upsample_shortcut`` is DC-AE's channel-duplicating ``"duplicate"`` (the
    official release's, kept by the B and L presets that mirror it),
    ``"average"`` or ``None``: duplication draws horizontal stripes wherever a
    stage halves the width (``dinosae.models.decoder_blocks.Upsample``), so the
    presets trained here from scratch (tiny, S) average instead.
    ``patch_shortcut`` adds a linear map of each input token straight to its
    pixel block (a 1x1 convolution and a pixel shuffle) to the prediction, so
    the stages learn a residual over a linear patch decoder. It is not in the
    paper; only the tiny preset sets it: decoders as small as tiny's, trained
    for a few CPU minutes, otherwise get no further than colour blobs
    (BENCHMARKS.md, "The demo's autoencoder").

    Example:
        >>> DecoderConfig(act="relu").act
        'relu'
    """

    widths: tuple[int, ...] = (256, 512, 512, 1024, 1024)
    depths: tuple[int, ...] = (5, 5, 3, 3, 3)
    blocks: tuple[str, ...] = ("res", "res", "res", "vit", "vit")
    head_dim: int = 32
    norm: str = "pixel"
    vit_norm: bool = True
    attention_scales: tuple[int, ...] = (5,)
    upsample: str = "interpolate"
    upsample_shortcut: str | None = "duplicate"
    act: str = "silu"
    out_norm: bool = True
    out_act: str = "silu"
    in_shortcut: bool = False
    patch_shortcut: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if not len(self.widths) == len(self.depths) == len(self.blocks):
            raise ValueError(f"decoder widths {self.widths}, depths {self.depths} and blocks {self.blocks} "
                             "differ in length")
        unknown = set(self.blocks) - {"res", "vit"}
        if unknown:
            raise ValueError(f"unknown decoder blocks {sorted(unknown)}; choose 'res' or 'vit'")
        if 0 in self.depths[1:]:
            raise ValueError(f"only the first decoder stage may have depth 0, got depths {self.depths}")
        check_range(self, 1, 1 << 16, "widths", "head_dim")
        check_range(self, 0, 256, "depths")
        if self.upsample_shortcut not in SHORTCUTS:
            raise ValueError(f"unknown decoder upsample_shortcut {self.upsample_shortcut!r}; choose one of "
                             f"{SHORTCUTS}")
        for name, value, options in (("act", self.act, ACTIVATIONS), ("out_act", self.out_act, ACTIVATIONS),
                                     ("norm", self.norm, NORMS), ("upsample", self.upsample, UPSAMPLES)):
            if value not in options:
                raise ValueError(f"unknown decoder {name} {value!r}; choose one of {options}")


@dataclass(frozen=True)
class AEConfig:
    """The autoencoder: ViT, stem, decoder, and the conventions at its edges.

    ``latent_scale`` says what the decoder takes (see ``LATENT_SCALES``); this
    toolkit trains decoders on ``"sqrt_dim"``, the official release's decoder
    takes ``"raw_tokens"``. Whatever it is, ``encode`` returns unit tokens (the
    spherical latent that flow matching models), and ``decode`` of unit tokens
    scales them by ``decode_scale`` when set (the HAE paper's s_vae), else by
    the ``latent_scale``'s own factor. ``vit_depth`` keeps only the first blocks
    of the ViT (``None``: all).

    Example:
        >>> AEConfig(latent_scale=14.0).latent_scale
        14.0
    """

    vit: str = "vit_base_patch16_dinov3"
    image_size: int = 256
    stem: str = "hierarchical"
    stem_norm: str = "pixel"
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    disc_depths: tuple[int, ...] = (2, 5, 8, 11)
    pixel_input: str = "imagenet"
    pixel_output: str = "signed"
    latent_scale: str | float = "sqrt_dim"
    decode_scale: float | None = None
    vit_depth: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        check_range(self, 16, 8192, "image_size")
        check_range(self, 1, 256, "vit_depth")  # a ViT of no block would "train" on its patch embedding alone
        check_range(self, 0, 255, "disc_depths")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        if self.pixel_input not in PIXEL_INPUTS:
            raise ValueError(f"unknown pixel_input {self.pixel_input!r}; choose one of {PIXEL_INPUTS}")
        if self.pixel_output not in PIXEL_OUTPUTS:
            raise ValueError(f"unknown pixel_output {self.pixel_output!r}; choose one of {PIXEL_OUTPUTS}")
        if isinstance(self.latent_scale, str):
            if self.latent_scale not in LATENT_SCALES:
                raise ValueError(f"unknown latent_scale {self.latent_scale!r}; choose one of {LATENT_SCALES} "
                                 "or a number")
        elif not self.latent_scale > 0:
            raise ValueError(f"a numeric latent_scale must be > 0, got {self.latent_scale}")
        if self.decode_scale is not None and not self.decode_scale > 0:
            raise ValueError(f"decode_scale must be > 0, got {self.decode_scale}")


AE_PRESETS: dict[str, AEConfig] = {
    "tiny": AEConfig(vit="vit_tiny_patch16_dinov3_qkvb", image_size=64, stem_norm="image",
                     decoder=DecoderConfig(widths=(16, 32, 64, 128, 128), depths=(0, 1, 1, 1, 1),
                                           head_dim=16, upsample_shortcut="average", patch_shortcut=True),
                     disc_depths=(3, 7, 11)),
    "S": AEConfig(vit="vit_small_patch16_dinov3",
                  decoder=DecoderConfig(widths=(128, 256, 256, 512, 512), depths=(2, 2, 2, 2, 2),
                                        upsample_shortcut="average")),
    "B": AEConfig(vit="vit_base_patch16_dinov3"),
    "L": AEConfig(vit="vit_large_patch16_dinov3", disc_depths=(5, 11, 17, 23)),
}

# Other frozen encoders, as RAE ships them, by timm name; the tag sets the input statistics. Each size keeps
# the DINOv3 preset's stem, decoder and discriminator taps (the block counts are the same).
ENCODER_FAMILIES: dict[str, dict[str, str]] = {
    "dinov2": {"S": "vit_small_patch14_reg4_dinov2.lvd142m", "B": "vit_base_patch14_reg4_dinov2.lvd142m",
               "L": "vit_large_patch14_reg4_dinov2.lvd142m"},
    "siglip2": {"B": "vit_base_patch16_siglip_256.v2_webli", "L": "vit_large_patch16_siglip_256.v2_webli"},
    "mae": {"B": "vit_base_patch16_224.mae", "L": "vit_large_patch16_224.mae"},
    "clip": {"B": "vit_base_patch16_clip_224.openai", "L": "vit_large_patch14_clip_224.openai"},
}
AE_PRESETS.update({f"{size}-{family}": replace(AE_PRESETS[size], vit=vit)
                   for family, sizes in ENCODER_FAMILIES.items() for size, vit in sizes.items()})
