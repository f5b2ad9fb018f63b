"""The autoencoder's configuration: ViT, stem and decoder, and its named sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

@dataclass
class DecoderConfig:
    """Stage widths, depths and block kinds, from full resolution (index 0) to the latent grid.

    ``blocks[i]`` is ``"res"`` (two 3x3 convolutions) or ``"vit"`` (EfficientViT:
    linear attention + GLU conv MLP, cheap enough at low resolution). Five stages
    upsample by 2 four times: x16, one pixel block per token. The remaining
    fields choose between this toolkit's defaults and the official release's
    variants (``dinosae.io.official`` sets them when it reads a released file).
    """

    widths: tuple[int, ...] = (256, 512, 512, 1024, 1024)
    depths: tuple[int, ...] = (5, 5, 3, 3, 3)
    blocks: tuple[str, ...] = ("res", "res", "res", "vit", "vit")
    head_dim: int = 32
    norm: str = "pixel"
    vit_norm: bool = True
    attention_scales: tuple[int, ...] = (5,)
    upsample: str = "interpolate"
    out_act: str = "silu"
    in_shortcut: bool = False


@dataclass
class AEConfig:
    """The autoencoder: ViT, stem and decoder."""

    vit: str = "vit_base_patch16_dinov3"
    image_size: int = 256
    stem: str = "hierarchical"
    stem_norm: str = "pixel"
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    disc_depths: tuple[int, ...] = (2, 5, 8, 11)


AE_PRESETS: dict[str, AEConfig] = {
    "tiny": AEConfig(vit="vit_tiny_patch16_dinov3_qkvb", image_size=64,
                     decoder=DecoderConfig(widths=(16, 32, 64, 128, 128), depths=(0, 1, 1, 1, 1),
                                           head_dim=16),
                     disc_depths=(3, 7, 11)),
    "S": AEConfig(vit="vit_small_patch16_dinov3",
                  decoder=DecoderConfig(widths=(128, 256, 256, 512, 512), depths=(2, 2, 2, 2, 2))),
    "B": AEConfig(vit="vit_base_patch16_dinov3"),
    "L": AEConfig(vit="vit_large_patch16_dinov3", disc_depths=(5, 11, 17, 23)),
}


