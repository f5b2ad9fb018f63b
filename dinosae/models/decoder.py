"""The DC-AE-style decoder: a (B, N, D) grid of latent tokens to an image, x16 upsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dinosae.config import DecoderConfig
from dinosae.models.decoder_blocks import EfficientViTBlock, ResBlock, Upsample, duplicate_channels
from dinosae.models.layers import RMSNorm2d, activation
from dinosae.models.recompute import conv_of


class Decoder(nn.Module):
    """Decoder inputs (B, N, D) on a square grid to a prediction (B, 3, 16 sqrt(N), 16 sqrt(N)).

    The input is what ``SphericalAutoencoder`` makes of a latent for this
    decoder (its ``latent_scale``); the output is the raw prediction, in the
    autoencoder's ``pixel_output`` convention. Stage ``i`` works at 1 / 2^i of
    the output resolution; the decoder runs from the last stage (the latent
    grid) to stage 0, starting every stage but the last with an ``Upsample``.
    As in DC-AE, a first stage of depth 0 is empty and the head upsamples
    instead (norm, activation, then an upsampling convolution to RGB). With
    ``patch_shortcut``, a linear map of each token to its pixel block is added
    to the prediction.

    With ``checkpointing`` on, training keeps only each stage's input and
    recomputes the stage in the backward pass: the full-resolution stages'
    activations dominate a step's memory at 256 px.

    Example:
        >>> config = DecoderConfig(widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1), head_dim=8)
        >>> Decoder(12, config)(torch.randn(2, 4, 12)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        widths, depths, kinds = config.widths, config.depths, config.blocks
        if config.in_shortcut and widths[-1] % latent_dim:
            raise ValueError(f"the input shortcut needs the last width {widths[-1]} to be a multiple of {latent_dim}")
        self.latent_dim = latent_dim
        self.config = config
        self.checkpointing = False
        self.conv_in = nn.Conv2d(latent_dim, widths[-1], 3, padding=1)
        self.stages = nn.ModuleList()
        for i in reversed(range(len(widths))):
            if depths[i] == 0:
                continue
            stage: list[nn.Module] = []
            if i < len(widths) - 1:
                stage.append(Upsample(widths[i + 1], widths[i], config.upsample, config.upsample_shortcut))
            stage += [self._block(kinds[i], widths[i]) for _ in range(depths[i])]
            self.stages.append(nn.Sequential(*stage))
        head = widths[0] if depths[0] > 0 else widths[1]
        self.norm_out = RMSNorm2d(head, over=config.norm) if config.out_norm else nn.Identity()
        self.act_out = activation(config.out_act)
        if depths[0] > 0:
            self.conv_out: nn.Module = nn.Conv2d(head, 3, 3, padding=1)
        else:
            self.conv_out = Upsample(head, 3, config.upsample, shortcut=None)
        self.scale = 2 ** (len(widths) - 1)
        self.patch_out = nn.Conv2d(latent_dim, 3 * self.scale ** 2, 1) if config.patch_shortcut else None

    def _block(self, kind: str, width: int) -> nn.Module:
        config = self.config
        if kind == "res":
            return ResBlock(width, config.norm, config.act)
        return EfficientViTBlock(width, config.head_dim, tuple(config.attention_scales),
                                 config.norm if config.vit_norm else None, config.act)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight that the adaptive GAN weight compares gradients at."""
        return self.conv_out.weight if isinstance(self.conv_out, nn.Conv2d) else self.conv_out.conv.weight

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.shape[-1] != self.latent_dim:
            raise ValueError(f"expected latents (B, N, {self.latent_dim}), got shape {tuple(inputs.shape)}")
        side = math.isqrt(inputs.shape[1])
        if side * side != inputs.shape[1]:
            raise ValueError(f"latent token count {inputs.shape[1]} is not a square grid")
        grid = inputs.transpose(1, 2).reshape(inputs.shape[0], self.latent_dim, side, side)
        grid = grid.to(self.conv_in.weight.dtype)
        x = self.conv_in(grid)
        if self.config.in_shortcut:
            x = x + duplicate_channels(grid, x.shape[1])
        for stage in self.stages:
            x = self._run(stage, x)
        prediction = self._run(self._head, x)
        if self.patch_out is not None:
            prediction = prediction + F.pixel_shuffle(self.patch_out(grid), self.scale)
        return prediction

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv_out, nn.Conv2d):
            return conv_of(self.conv_out, self.act_out, self.norm_out(x))
        return self.conv_out(self.act_out(self.norm_out(x)))

    def _run(self, part: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(part, x, use_reentrant=False)
        return part(x)
