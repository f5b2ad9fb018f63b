"""The DINO discriminator: frozen ViT features at several depths, small trainable heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dinosae.models.vit import tapped_tokens, teacher_grid


class TokenHead(nn.Module):
    """Per-token logits from one depth's tokens (B, N, D): 1x1 projection, a residual k=9 token mix.

    Example:
        >>> TokenHead(16, 8)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5])
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Conv1d(dim, hidden, 1)
        self.mix = nn.Conv1d(hidden, hidden, 9, padding=4)
        self.logits = nn.Conv1d(hidden, 1, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.project(self.norm(tokens).transpose(1, 2)), 0.2)
        x = x + F.leaky_relu(self.mix(x), 0.2)
        return self.logits(x).squeeze(1)


class DinoDiscriminator(nn.Module):
    """Hinge-GAN logits for images in [0, 1], read off a frozen DINO ViT by one head per depth.

    The ViT is passed at call time rather than owned, so the encoder's frozen
    ViT serves both (one copy in memory, none in the discriminator's checkpoint).
    Gradients flow through the frozen ViT to the images, which is what trains
    the decoder.

    Example:
        >>> import warnings
        >>> from dinosae.models.vit import create_vit
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vit = create_vit("vit_tiny_patch16_dinov3_qkvb", image_size=32)
        >>> DinoDiscriminator(192, depths=(3, 7))(torch.rand(2, 3, 32, 32), vit).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, depths: tuple[int, ...], hidden: int = 128) -> None:
        super().__init__()
        self.depths = tuple(depths)
        self.heads = nn.ModuleList(TokenHead(dim, hidden) for _ in self.depths)

    def forward(self, images: torch.Tensor, vit: nn.Module) -> torch.Tensor:
        if max(self.depths) >= len(vit.blocks):
            raise ValueError(f"discriminator depths {self.depths} exceed the ViT's {len(vit.blocks)} blocks")
        taps = tapped_tokens(vit, teacher_grid(vit, images), self.depths)
        return torch.cat([head(tap) for head, tap in zip(self.heads, taps)], dim=1)
