"""The DC-AE-style decoder: a (B, N, D) spherical latent grid to an image, x16 upsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dinosae.config import DecoderConfig
from dinosae.models.decoder_blocks import EfficientViTBlock, ResBlock, Upsample, duplicate_channels
from dinosae.models.layers import RMSNorm2d

ACTIVATIONS = {"silu": F.silu, "relu": F.relu}


class Decoder(nn.Module):
    """Unit latent tokens (B, N, D) on a square grid to images (B, 3, 16 sqrt(N), 16 sqrt(N)).

    The latents are scaled by sqrt(D), so each channel has unit mean square as
    the convolutions' initialization expects. Stage ``i`` works at 1 / 2^i of
    the output resolution; the decoder runs from the last stage (the latent
    grid) to stage 0, starting every stage but the last with an ``Upsample``.
    Outputs are images in [0, 1] (the network predicts [-1, 1], DC-AE's
    convention), not clamped, so saturated pixels still get gradients.

    Example:
        >>> config = DecoderConfig(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), head_dim=8)
        >>> Decoder(12, config)(torch.randn(2, 4, 12)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        widths, depths, kinds = config.widths, config.depths, config.blocks
        if not len(widths) == len(depths) == len(kinds):
            raise ValueError(f"decoder widths {widths}, depths {depths} and blocks {kinds} differ in length")
        unknown = set(kinds) - {"res", "vit"}
        if unknown:
            raise ValueError(f"unknown decoder blocks {sorted(unknown)}; choose 'res' or 'vit'")
        if config.out_act not in ACTIVATIONS:
            raise ValueError(f"unknown output activation {config.out_act!r}; choose from {sorted(ACTIVATIONS)}")
        if config.in_shortcut and widths[-1] % latent_dim:
            raise ValueError(f"the input shortcut needs the last width {widths[-1]} to be a multiple of {latent_dim}")
        self.latent_dim = latent_dim
        self.config = config
        self.conv_in = nn.Conv2d(latent_dim, widths[-1], 3, padding=1)
        self.stages = nn.ModuleList()
        for i in reversed(range(len(widths))):
            stage: list[nn.Module] = []
            if i < len(widths) - 1:
                stage.append(Upsample(widths[i + 1], widths[i], config.upsample))
            stage += [self._block(kinds[i], widths[i]) for _ in range(depths[i])]
            self.stages.append(nn.Sequential(*stage))
        self.norm_out = RMSNorm2d(widths[0], over=config.norm)
        self.act_out = ACTIVATIONS[config.out_act]
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def _block(self, kind: str, width: int) -> nn.Module:
        config = self.config
        if kind == "res":
            return ResBlock(width, config.norm)
        return EfficientViTBlock(width, config.head_dim, tuple(config.attention_scales),
                                 config.norm if config.vit_norm else None)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight that the adaptive GAN weight compares gradients at."""
        return self.conv_out.weight

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 3 or latents.shape[-1] != self.latent_dim:
            raise ValueError(f"expected latents (B, N, {self.latent_dim}), got shape {tuple(latents.shape)}")
        side = math.isqrt(latents.shape[1])
        if side * side != latents.shape[1]:
            raise ValueError(f"latent token count {latents.shape[1]} is not a square grid")
        grid = latents.transpose(1, 2).reshape(latents.shape[0], self.latent_dim, side, side)
        grid = grid.to(self.conv_in.weight.dtype) * math.sqrt(self.latent_dim)
        x = self.conv_in(grid)
        if self.config.in_shortcut:
            x = x + duplicate_channels(grid, x.shape[1])
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(self.act_out(self.norm_out(x))) * 0.5 + 0.5
