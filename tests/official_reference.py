"""The official release's autoencoder, re-derived in plain torch on its own state dict.

An independent statement of what ``wkdgnsgo/dino-sae``'s ``src/model.py`` (the
same file in ``wkdgnsgo/HAE``) computes, written from its code and from Meta's
DINOv3 ViT (``facebookresearch/dinov3``): the CNN stem with image-wide RMS
norms, Meta's ViT with its 1 + 4 prefix tokens, RoPE and final LayerNorm, and
the efficientvit DC-AE decoder in the release's layout (stage 0 the deepest).
It shares no code with ``dinosae`` and works on Meta's and efficientvit's key
names, so a mistake in the toolkit's mapping, in timm's conversion, or in a
convention (the latent's scale, an activation, a head) shows as a difference.

It also builds official-layout state dicts with trained-like weights: norm
gains and biases away from their initial values, non-zero q/v biases,
LayerScales of 0.05 to 0.25, which is what exposes scaling bugs that
initial weights hide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIT = "dino_model."
STEM = "dino_model.patch_embed.cnn."
REGISTERS = 4


@dataclass(frozen=True)
class Release:
    """The shape of one official-layout model and the conventions its weights cannot show."""

    dim: int
    heads: int
    depth: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    blocks: tuple[str, ...]
    act: str = "silu"
    out_act: str = "relu"
    upsample: str = "pixelshuffle"
    upsample_shortcut: bool = True
    in_shortcut: bool = True
    out_norm: bool = True

    @property
    def settings(self) -> dict:
        """The JSON beside the weights: what only the release's code tells."""
        return {"decoder": {"act": self.act, "out_act": self.out_act}}


ACTIVATIONS = {"silu": F.silu, "relu": F.relu}


# ---------------------------------------------------------------- building a file


def _weight(generator: torch.Generator, *shape: int) -> torch.Tensor:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(*shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)


def _near(generator: torch.Generator, value: float, spread: float, *shape: int) -> torch.Tensor:
    return value + spread * torch.randn(*shape, generator=generator, dtype=torch.float64)


def release_state(release: Release, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official-layout state dict with trained-like weights (float64)."""
    g = torch.Generator().manual_seed(seed)
    return {**_stem(release, g), **_vit(release, g), **_decoder(release, g)}


def _stem(release: Release, g: torch.Generator) -> dict[str, torch.Tensor]:
    channels = (3, 64, 128, 256, release.dim)
    state = {}
    for i in range(4):
        kernel = 7 if i == 0 else 3
        state[f"{STEM}{i}.conv.weight"] = _weight(g, channels[i + 1], channels[i], kernel, kernel)
        if i < 3:
            state[f"{STEM}{i}.norm.weight"] = _near(g, 1.0, 0.3, 1, channels[i + 1], 1, 1)
    return state


def _vit(release: Release, g: torch.Generator) -> dict[str, torch.Tensor]:
    d = release.dim
    state = {f"{VIT}cls_token": _near(g, 0.0, 0.5, 1, 1, d), f"{VIT}storage_tokens": _near(g, 0.0, 0.5, 1, REGISTERS, d),
             f"{VIT}mask_token": torch.zeros(1, d, dtype=torch.float64),
             f"{VIT}rope_embed.periods": torch.ones(d // release.heads // 4, dtype=torch.float64),
             f"{VIT}norm.weight": _near(g, 0.7, 0.3, d), f"{VIT}norm.bias": _near(g, 0.0, 0.2, d)}
    for i in range(release.depth):
        b = f"{VIT}blocks.{i}."
        q, k, v = (_near(g, 0.0, 0.2, d) for _ in range(3))
        state.update({
            b + "norm1.weight": _near(g, 1.0, 0.3, d), b + "norm1.bias": _near(g, 0.0, 0.1, d),
            b + "attn.qkv.weight": _weight(g, 3 * d, d), b + "attn.qkv.bias": torch.cat([q, k, v]),
            # Meta masks the k third of the bias (its stored value is never used).
            b + "attn.qkv.bias_mask": torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)]).double(),
            b + "attn.proj.weight": _weight(g, d, d), b + "attn.proj.bias": _near(g, 0.0, 0.1, d),
            b + "ls1.gamma": 0.05 + 0.2 * torch.rand(d, generator=g, dtype=torch.float64),
            b + "norm2.weight": _near(g, 1.0, 0.3, d), b + "norm2.bias": _near(g, 0.0, 0.1, d),
            b + "mlp.fc1.weight": _weight(g, 4 * d, d), b + "mlp.fc1.bias": _near(g, 0.0, 0.1, 4 * d),
            b + "mlp.fc2.weight": _weight(g, d, 4 * d), b + "mlp.fc2.bias": _near(g, 0.0, 0.1, d),
            b + "ls2.gamma": 0.05 + 0.2 * torch.rand(d, generator=g, dtype=torch.float64),
        })
    return state


def _decoder(release: Release, g: torch.Generator) -> dict[str, torch.Tensor]:
    widths, depths = release.widths, release.depths
    stages = len(widths)
    project_in = "decoder.project_in." + ("main." if release.in_shortcut else "")
    state = {project_in + "conv.weight": _weight(g, widths[-1], release.dim, 3, 3),
             project_in + "conv.bias": _near(g, 0.0, 0.1, widths[-1])}
    for k in range(stages):
        s = stages - 1 - k
        if depths[s] == 0:
            continue
        width, prefix, index = widths[s], f"decoder.stages.{k}.op_list.", 0
        if s < stages - 1:
            out = 4 * width if release.upsample == "pixelshuffle" else width
            up = prefix + "0." + ("main." if release.upsample_shortcut else "")
            state[up + "conv.conv.weight"] = _weight(g, out, widths[s + 1], 3, 3)
            state[up + "conv.conv.bias"] = _near(g, 0.0, 0.1, out)
            index = 1
        for j in range(index, index + depths[s]):
            block = f"{prefix}{j}."
            if release.blocks[s] == "res":
                state[block + "main.conv1.conv.weight"] = _weight(g, width, width, 3, 3)
                state[block + "main.conv1.conv.bias"] = _near(g, 0.0, 0.1, width)
                state[block + "main.conv2.conv.weight"] = _weight(g, width, width, 3, 3)
                state[block + "main.conv2.norm.weight"] = _near(g, 1.0, 0.3, 1, width, 1, 1)
            else:
                c, m = block + "context_module.main.", block + "local_module.main."
                state[c + "qkv.conv.weight"] = _weight(g, 3 * width, width, 1, 1)
                state[c + "proj.conv.weight"] = _weight(g, width, width, 1, 1)
                state[m + "inverted_conv.conv.weight"] = _weight(g, 8 * width, width, 1, 1)
                state[m + "inverted_conv.conv.bias"] = _near(g, 0.0, 0.1, 8 * width)
                state[m + "depth_conv.conv.weight"] = _weight(g, 8 * width, 1, 3, 3)
                state[m + "depth_conv.conv.bias"] = _near(g, 0.0, 0.1, 8 * width)
                state[m + "point_conv.conv.weight"] = _weight(g, width, 4 * width, 1, 1)
    head = widths[0] if depths[0] > 0 else widths[1]
    tail = "decoder.project_out.op_list." + ("2." if release.out_norm else "1.")
    if release.out_norm:
        state["decoder.project_out.op_list.0.weight"] = _near(g, 1.0, 0.3, 1, head, 1, 1)
    if depths[0] > 0:
        state[tail + "conv.weight"] = _weight(g, 3, head, 3, 3)
        state[tail + "conv.bias"] = _near(g, 0.0, 0.1, 3)
    else:  # DC-AE's head upsamples when the first stage is empty
        out = 12 if release.upsample == "pixelshuffle" else 3
        state[tail + "conv.conv.weight"] = _weight(g, out, head, 3, 3)
        state[tail + "conv.conv.bias"] = _near(g, 0.0, 0.1, out)
    return state


# ---------------------------------------------------------------- the forward pass


def forward(state: dict[str, torch.Tensor], release: Release, images: torch.Tensor) -> torch.Tensor:
    """The release's ``model(image)[0]``: images as the release takes them, its raw prediction."""
    return decoder(state, release, encode(state, release, images))


def encode(state: dict[str, torch.Tensor], release: Release, images: torch.Tensor) -> torch.Tensor:
    """The release's ``encode(image)["patch_tokens"]``: final-LayerNorm patch tokens (B, N, D)."""
    return vit_patch_tokens(state, release, stem(state, images))


def _rms_image(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6) * weight


def stem(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The CNN patch embedding: (B, 3, H, W) -> (B, H/16, W/16, D), channels last."""
    x = images
    for i in range(4):
        weight = state[f"{STEM}{i}.conv.weight"]
        x = F.conv2d(x, weight, stride=2, padding=weight.shape[-1] // 2)
        if i < 3:
            x = F.silu(_rms_image(x, state[f"{STEM}{i}.norm.weight"]))
    return x.permute(0, 2, 3, 1)


def _rope(height: int, width: int, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3's RoPE: pixel-centre coordinates in [-1, 1] per axis, periods 100^(2i / (head_dim / 2))."""
    rows = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    cols = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2) * 2 - 1
    periods = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 2))
    angles = (2 * math.pi * coords[:, :, None] / periods).reshape(height * width, head_dim // 2).repeat(1, 2)
    return angles.sin().to(dtype), angles.cos().to(dtype)


def _rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def vit_patch_tokens(state: dict[str, torch.Tensor], release: Release, grid: torch.Tensor) -> torch.Tensor:
    """Meta's ``forward_features(...)["x_norm_patchtokens"]`` for a channels-last token grid."""
    batch, height, width, d = grid.shape
    heads, head_dim, prefix = release.heads, d // release.heads, 1 + REGISTERS
    x = torch.cat([state[f"{VIT}cls_token"].expand(batch, -1, -1),
                   state[f"{VIT}storage_tokens"].expand(batch, -1, -1), grid.reshape(batch, -1, d)], dim=1)
    sin, cos = _rope(height, width, head_dim, x.dtype)
    for i in range(release.depth):
        b = f"{VIT}blocks.{i}."
        h = F.layer_norm(x, (d,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-5)
        bias = state[b + "attn.qkv.bias"] * state[b + "attn.qkv.bias_mask"]
        q, k, v = F.linear(h, state[b + "attn.qkv.weight"], bias).reshape(batch, -1, 3, heads, head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q = torch.cat([q[:, :, :prefix], _rotate(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], _rotate(k[:, :, prefix:], sin, cos)], dim=2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, -1, d)
        x = x + state[b + "ls1.gamma"] * F.linear(attended, state[b + "attn.proj.weight"], state[b + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-5)
        h = F.linear(F.gelu(F.linear(h, state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"])),
                     state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"])
        x = x + state[b + "ls2.gamma"] * h
    x = F.layer_norm(x, (d,), state[f"{VIT}norm.weight"], state[f"{VIT}norm.bias"], eps=1e-5)
    return x[:, prefix:]


def _duplicate_up(x: torch.Tensor, channels: int) -> torch.Tensor:
    """efficientvit's channel-duplicating shortcut with a x2 pixel shuffle."""
    return F.pixel_shuffle(x.repeat_interleave(4 * channels // x.shape[1], dim=1), 2)


def _upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "pixelshuffle":
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)
    return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)


def _linear_attention(x: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor) -> torch.Tensor:
    """LiteMLA without multi-scale aggregation: ReLU kernels, v padded with ones, 32-dim heads."""
    batch, channels, height, width = x.shape
    qkv = F.conv2d(x, qkv_weight).reshape(batch, -1, 3 * 32, height * width)
    q, k, v = F.relu(qkv[:, :, :32]), F.relu(qkv[:, :, 32:64]), qkv[:, :, 64:]
    v = F.pad(v, (0, 0, 0, 1), value=1.0)
    out = (v @ k.transpose(-1, -2)) @ q
    out = out[:, :, :-1] / (out[:, :, -1:] + 1e-15)
    return F.conv2d(out.reshape(batch, -1, height, width), proj_weight)


def decoder(state: dict[str, torch.Tensor], release: Release, tokens: torch.Tensor) -> torch.Tensor:
    """``decode``: the release's DC-AE decoder on (B, N, D) tokens, taken as they are."""
    act, side = ACTIVATIONS[release.act], math.isqrt(tokens.shape[1])
    z = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    project_in = "decoder.project_in." + ("main." if release.in_shortcut else "")
    x = F.conv2d(z, state[project_in + "conv.weight"], state[project_in + "conv.bias"], padding=1)
    if release.in_shortcut:
        x = x + z.repeat_interleave(x.shape[1] // z.shape[1], dim=1)
    for k in range(len(release.widths)):
        prefix = f"decoder.stages.{k}.op_list."
        ops = sorted({int(key[len(prefix):].split(".")[0]) for key in state if key.startswith(prefix)})
        for index in ops:
            p = f"{prefix}{index}."
            up = p + ("main." if release.upsample_shortcut else "") + "conv.conv."
            if up + "weight" in state:
                main = _upsample_conv(x, state[up + "weight"], state[up + "bias"], release.upsample)
                x = main + _duplicate_up(x, main.shape[1]) if release.upsample_shortcut else main
            elif p + "main.conv1.conv.weight" in state:
                h = act(F.conv2d(x, state[p + "main.conv1.conv.weight"], state[p + "main.conv1.conv.bias"], padding=1))
                h = F.conv2d(h, state[p + "main.conv2.conv.weight"], padding=1)
                x = x + _rms_image(h, state[p + "main.conv2.norm.weight"])
            else:
                c, m = p + "context_module.main.", p + "local_module.main."
                x = x + _linear_attention(x, state[c + "qkv.conv.weight"], state[c + "proj.conv.weight"])
                h = act(F.conv2d(x, state[m + "inverted_conv.conv.weight"], state[m + "inverted_conv.conv.bias"]))
                h = F.conv2d(h, state[m + "depth_conv.conv.weight"], state[m + "depth_conv.conv.bias"], padding=1,
                             groups=h.shape[1])
                value, gate = h.chunk(2, dim=1)
                x = x + F.conv2d(value * act(gate), state[m + "point_conv.conv.weight"])
    if release.out_norm:
        x = _rms_image(x, state["decoder.project_out.op_list.0.weight"])
    x = ACTIVATIONS[release.out_act](x)
    tail = "decoder.project_out.op_list." + ("2." if release.out_norm else "1.")
    if release.depths[0] > 0:
        return F.conv2d(x, state[tail + "conv.weight"], state[tail + "conv.bias"], padding=1)
    return _upsample_conv(x, state[tail + "conv.conv.weight"], state[tail + "conv.conv.bias"], release.upsample)
