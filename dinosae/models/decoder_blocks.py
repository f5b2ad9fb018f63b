"""The decoder's building blocks: residual conv blocks, EfficientViT blocks, x2 upsampling.

Each block takes ``norm``: the ``RMSNorm2d`` variant (``"pixel"`` or ``"image"``),
or ``None`` where a block has no norm at all (the official release's
EfficientViT blocks), and ``act``, DC-AE's activation name (``dinosae.models.layers.activation``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dinosae.config.autoencoder import SHORTCUTS
from dinosae.models.layers import RMSNorm2d, activation
from dinosae.models.recompute import NEAREST_X2, conv_of


def _norm(channels: int, norm: str | None) -> nn.Module:
    return nn.Identity() if norm is None else RMSNorm2d(channels, over=norm)


class ResBlock(nn.Module):
    """x + norm(conv(act(conv(x)))): two 3x3 convolutions at constant width.

    Example:
        >>> ResBlock(8, act="relu")(torch.randn(1, 8, 4, 4)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, channels: int, norm: str | None = "pixel", act: str = "silu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = activation(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = _norm(channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(conv_of(self.conv2, self.act, self.conv1(x)))


class LinearAttention(nn.Module):
    """Multi-scale ReLU linear attention (EfficientViT's LiteMLA), linear in the pixel count.

    Queries, keys and values come from a 1x1 convolution, laid out head by
    head; each kernel size in ``scales`` adds depthwise-aggregated copies as
    extra heads. Attention is ``relu(q) (relu(k)^T v) / (relu(q) sum relu(k))``
    per head, in float32 at least (float64 stays float64).

    Example:
        >>> LinearAttention(16, head_dim=8)(torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, channels: int, head_dim: int = 32, scales: tuple[int, ...] = (5,),
                 norm: str | None = "pixel", eps: float = 1e-15) -> None:
        super().__init__()
        heads = max(1, channels // head_dim)
        self.head_dim, self.eps = head_dim, eps
        inner = heads * head_dim
        self.qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.aggregate = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * inner, 3 * inner, k, padding=k // 2, groups=3 * inner, bias=False),
                nn.Conv2d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False),
            )
            for k in scales
        )
        self.proj = nn.Conv2d((1 + len(scales)) * inner, channels, 1, bias=False)
        self.norm = _norm(channels, norm)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = qkv.shape
        qkv = qkv.to(torch.promote_types(qkv.dtype, torch.float32)).reshape(batch, -1, 3, self.head_dim,
                                                                             height * width)
        q, k, v = F.relu(qkv[:, :, 0]), F.relu(qkv[:, :, 1]), qkv[:, :, 2]
        kv = torch.einsum("bhdn,bhen->bhde", k, v)
        numerator = torch.einsum("bhdn,bhde->bhen", q, kv)
        denominator = torch.einsum("bhdn,bhd->bhn", q, k.sum(-1)).unsqueeze(2)
        return (numerator / (denominator + self.eps)).reshape(batch, -1, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        heads = [self._attend(qkv)] + [self._attend(aggregate(qkv)) for aggregate in self.aggregate]
        return self.norm(self.proj(torch.cat(heads, dim=1).to(x.dtype)))


class GLUConv(nn.Module):
    """The EfficientViT feed-forward (DC-AE's GLUMBConv): 1x1 expand and ``act``, 3x3 depthwise,
    an ``act`` gate, 1x1 project.

    Example:
        >>> GLUConv(8)(torch.randn(1, 8, 4, 4)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, channels: int, expand: int = 4, norm: str | None = "pixel", act: str = "silu") -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.act = activation(act)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = _norm(channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = conv_of(self.depthwise, self.act, self.expand(x)).chunk(2, dim=1)
        return self.norm(self.project(value * self.act(gate)))


class EfficientViTBlock(nn.Module):
    """Global context (linear attention) then local mixing (GLU conv), each residual.

    Example:
        >>> EfficientViTBlock(16, head_dim=8)(torch.randn(1, 16, 4, 4)).shape
        torch.Size([1, 16, 4, 4])
    """

    def __init__(self, channels: int, head_dim: int = 32, scales: tuple[int, ...] = (5,),
                 norm: str | None = "pixel", act: str = "silu") -> None:
        super().__init__()
        self.attention = LinearAttention(channels, head_dim, scales, norm)
        self.mlp = GLUConv(channels, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(x)
        return x + self.mlp(x)


def duplicate_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat each channel ``channels / C`` times: a parameter-free change of width."""
    if channels % x.shape[1]:
        raise ValueError(f"cannot duplicate {x.shape[1]} channels into {channels}")
    return x.repeat_interleave(channels // x.shape[1], dim=1)


def average_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The mean of each group of ``C / channels`` consecutive channels (a repeat when widening).

    Example:
        >>> average_channels(torch.arange(4.0).view(1, 4, 1, 1), 2).flatten().tolist()
        [0.5, 2.5]
    """
    if x.shape[1] % channels:
        return duplicate_channels(x, channels)
    batch, width, height, length = x.shape
    return x.view(batch, channels, width // channels, height, length).mean(dim=2)


class Upsample(nn.Module):
    """x2 upsampling: a learned branch plus (by default) a parameter-free shortcut, summed.

    At initialization the block passes its input through as a blocky upsampled
    image and the learned branch only adds a residual. The shortcut is

    - ``"duplicate"`` (DC-AE's channel duplication, the official release's):
      repeat channels ``4 out / in`` times and pixel-shuffle. When the width
      halves (repeat 2), each 2x2 block takes channel ``2k`` in its top row and
      ``2k + 1`` in its bottom row: rows alternate between channels while
      columns repeat, a built-in horizontal-stripe pattern that compounds over
      the stages (a fresh tiny decoder's output varies 7x more from row to row
      than from column to column), and that training excites again (the stripes
      of issue 11);
    - ``"average"``: the mean of each group of ``in / out`` channels, then
      nearest x2: isotropic, and the same as ``"duplicate"`` when ``in == out``;
    - ``None``: no shortcut.

    The learned branch is ``"interpolate"`` (nearest x2, then a 3x3 conv) or
    ``"pixelshuffle"`` (a 3x3 conv to 4x the channels, then pixel shuffle; the
    official release's).

    Example:
        >>> Upsample(16, 8)(torch.randn(1, 16, 4, 4)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "interpolate",
                 shortcut: str | None = "duplicate") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown upsampling shortcut {shortcut!r}; choose one of {SHORTCUTS}")
        if shortcut == "duplicate" and (4 * out_channels) % in_channels:
            raise ValueError(f"upsampling {in_channels} -> {out_channels} channels needs "
                             f"4 * {out_channels} to be a multiple of {in_channels}")
        if mode not in ("interpolate", "pixelshuffle"):
            raise ValueError(f"unknown upsampling {mode!r}; choose 'interpolate' or 'pixelshuffle'")
        self.mode, self.shortcut = mode, shortcut
        self.out_channels = out_channels
        conv_out = out_channels if mode == "interpolate" else 4 * out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "interpolate":
            main = conv_of(self.conv, NEAREST_X2, x)
        else:
            main = F.pixel_shuffle(self.conv(x), 2)
        if self.shortcut == "duplicate":
            return main + F.pixel_shuffle(duplicate_channels(x, 4 * self.out_channels), 2)
        if self.shortcut == "average":
            return main + F.interpolate(average_channels(x, self.out_channels), scale_factor=2.0, mode="nearest")
        return main
