"""Reading the official DINO-SAE release (``wkdgnsgo/dino-sae``) into this toolkit's modules.

The release's model code names the stem ``dino_model.patch_embed.cnn.{i}``, the
frozen DINOv3 ViT ``dino_model.*`` (in Meta's own key names) and the decoder
``decoder.*`` in efficientvit's layout (``op_list``, ``main``/``shortcut``
residual wrappers, stage 0 the deepest). Its decoder configuration is not
published, so it is read off the tensor shapes. Everything here is an explicit
key-by-key mapping: an unknown key is an error, never silently dropped.

Facts the release's code fixes, which set ``AEConfig`` fields:
- its "trms2d" norm is one RMS over (C, H, W) per image, weight (1, C, 1, 1), no
  bias: ``RMSNorm2d(over="image")``;
- its EfficientViT blocks have no norms, no multi-scale aggregation, 32-dim heads;
- upsampling is conv + pixel shuffle with a channel-duplicating shortcut, the
  input conv has a duplicating shortcut, and the output is norm -> ReLU -> conv.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from dinosae.config import AEConfig, DecoderConfig

STEM = "dino_model.patch_embed.cnn."
VIT = "dino_model."
DECODER = "decoder."
VIT_BY_DIM = {192: "vit_tiny_patch16_dinov3_qkvb", 384: "vit_small_patch16_dinov3", 768: "vit_base_patch16_dinov3",
              1024: "vit_large_patch16_dinov3"}
# A key whose weight has the block's width as dimension 1, per official block kind.
_WIDTH_KEY = {"res": "main.conv1.conv.weight", "vit": "context_module.main.qkv.conv.weight"}
_WRAPPERS = ("state_dict", "model", "module", "ema")
_PREFIXES = ("module.", "_orig_mod.")


class OfficialFormatError(ValueError):
    """A file claimed to be an official checkpoint does not have the expected keys or shapes."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat tensor dict of a ``.safetensors``/``.pt``/``.pth``/``.ckpt`` file, unwrapped.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``, DDP's
    ``module.``, torch.compile's ``_orig_mod.``) are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise OfficialFormatError(f"cannot read {str(path)!r} as a torch checkpoint: {error}") from error
    while isinstance(state, dict):
        wrapper = next((w for w in _WRAPPERS if isinstance(state.get(w), dict)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialFormatError(f"{str(path)!r} does not hold a flat dict of tensors")
    for prefix in _PREFIXES:
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


def is_official(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` uses the release's key names."""
    return any(k.startswith(STEM) for k in state) and any(k.startswith(DECODER + "stages.") for k in state)


def _decoder_blocks(state: dict[str, torch.Tensor], stage: int) -> dict[int, str]:
    """Block index -> ``up``, ``res`` or ``vit`` for one official stage, from its key names."""
    kinds: dict[int, str] = {}
    pattern = re.compile(rf"^{DECODER}stages\.{stage}\.op_list\.(\d+)\.(.*)$")
    for key in state:
        match = pattern.match(key)
        if not match:
            continue
        index, rest = int(match.group(1)), match.group(2)
        if rest.startswith("main.conv.conv."):
            kinds[index] = "up"
        elif rest.startswith("context_module.") or rest.startswith("local_module."):
            kinds[index] = "vit"
        elif rest.startswith("main.conv1.") or rest.startswith("main.conv2."):
            kinds[index] = "res"
        else:
            raise OfficialFormatError(f"unrecognized decoder key {key!r}")
    return kinds


def infer_config(state: dict[str, torch.Tensor], image_size: int = 256) -> AEConfig:
    """The ``AEConfig`` whose modules take the official ``state`` key for key."""
    try:
        dim = state[f"{STEM}3.conv.weight"].shape[0]
    except KeyError as error:
        raise OfficialFormatError(f"official checkpoint lacks the stem key {error}") from error
    if dim not in VIT_BY_DIM:
        raise OfficialFormatError(f"no DINOv3 ViT has width {dim}")
    stage_ids = {int(m.group(1)) for k in state if (m := re.match(rf"^{DECODER}stages\.(\d+)\.", k))}
    num_stages = max(stage_ids) + 1
    widths: list[int] = [0] * num_stages
    depths: list[int] = [0] * num_stages
    blocks: list[str] = ["res"] * num_stages
    upsample = "pixelshuffle"
    for k in range(num_stages):
        s = num_stages - 1 - k
        kinds = _decoder_blocks(state, k)
        body = {index: kind for index, kind in kinds.items() if kind != "up"}
        depths[s] = len(body)
        if len(set(body.values())) > 1:
            raise OfficialFormatError(f"decoder stage {k} mixes block kinds {sorted(set(body.values()))}")
        if body:
            first = min(body)
            blocks[s] = body[first]
            widths[s] = state[f"{DECODER}stages.{k}.op_list.{first}.{_WIDTH_KEY[blocks[s]]}"].shape[1]
        if "up" in kinds.values():
            up = state[f"{DECODER}stages.{k}.op_list.0.main.conv.conv.weight"]
            upsample = "pixelshuffle" if up.shape[0] == 4 * widths[s] else "interpolate"
    project_in = state.get(f"{DECODER}project_in.main.conv.weight", state.get(f"{DECODER}project_in.conv.weight"))
    if project_in is None:
        raise OfficialFormatError("official checkpoint lacks decoder.project_in")
    widths[-1] = project_in.shape[0]
    norm_keys = [k for k in state if k.startswith(DECODER) and k.endswith("norm.weight")]
    if any(state[k].dim() != 4 for k in norm_keys) or any(k.endswith("running_mean") for k in state):
        raise OfficialFormatError("only the release's 'trms2d' decoder norms are supported (found BatchNorm "
                                  "or per-channel norms)")
    vit_norm = any("context_module.main.proj.norm." in k for k in state)
    decoder = DecoderConfig(widths=tuple(widths), depths=tuple(depths), blocks=tuple(blocks), head_dim=32,
                            norm="image", vit_norm=vit_norm, attention_scales=(),
                            upsample=upsample, out_act="relu",
                            in_shortcut=f"{DECODER}project_in.main.conv.weight" in state)
    return AEConfig(vit=VIT_BY_DIM[dim], image_size=image_size, stem="hierarchical", stem_norm="image",
                    decoder=decoder)


# Official decoder block key (after ``op_list.{j}.``) -> this toolkit's, by block kind.
_BLOCK_KEYS = {
    "up": {"main.conv.conv.weight": "conv.weight", "main.conv.conv.bias": "conv.bias"},
    "res": {"main.conv1.conv.weight": "conv1.weight", "main.conv1.conv.bias": "conv1.bias",
            "main.conv2.conv.weight": "conv2.weight", "main.conv2.norm.weight": "norm.weight"},
    "vit": {"context_module.main.qkv.conv.weight": "attention.qkv.weight",
            "context_module.main.proj.conv.weight": "attention.proj.weight",
            "context_module.main.proj.norm.weight": "attention.norm.weight",
            "local_module.main.inverted_conv.conv.weight": "mlp.expand.weight",
            "local_module.main.inverted_conv.conv.bias": "mlp.expand.bias",
            "local_module.main.depth_conv.conv.weight": "mlp.depthwise.weight",
            "local_module.main.depth_conv.conv.bias": "mlp.depthwise.bias",
            "local_module.main.point_conv.conv.weight": "mlp.project.weight",
            "local_module.main.point_conv.norm.weight": "mlp.norm.weight"},
}
_FIXED_KEYS = {
    "decoder.project_in.main.conv.weight": "decoder.conv_in.weight",
    "decoder.project_in.main.conv.bias": "decoder.conv_in.bias",
    "decoder.project_in.conv.weight": "decoder.conv_in.weight",
    "decoder.project_in.conv.bias": "decoder.conv_in.bias",
    "decoder.project_out.op_list.0.weight": "decoder.norm_out.weight",
    "decoder.project_out.op_list.2.conv.weight": "decoder.conv_out.weight",
    "decoder.project_out.op_list.2.conv.bias": "decoder.conv_out.bias",
}
_STEM_KEY = re.compile(rf"^{re.escape(STEM)}(\d)\.(conv|norm)\.weight$")
_STAGE_KEY = re.compile(rf"^{DECODER}stages\.(\d+)\.op_list\.(\d+)\.(.*)$")


def _flatten_norm(key: str, value: torch.Tensor) -> torch.Tensor:
    # The release stores RMSNorm2d weights as (1, C, 1, 1); ours are (C,).
    return value.reshape(-1) if key.endswith("norm.weight") or key.endswith("norm_out.weight") else value


def map_official(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an official state dict into (stem + decoder weights in our key names, ViT weights).

    The ViT weights keep Meta's DINOv3 names (without the ``dino_model.``
    prefix); ``load_official`` converts them with timm's own converter.
    """
    ours: dict[str, torch.Tensor] = {}
    vit: dict[str, torch.Tensor] = {}
    kinds_by_stage: dict[int, dict[int, str]] = {}
    for key, value in state.items():
        if key.startswith(STEM):
            match = _STEM_KEY.match(key)
            if not match:
                raise OfficialFormatError(f"unrecognized stem key {key!r}")
            layer, part = int(match.group(1)), match.group(2)
            target = f"encoder.stem.layers.{3 * layer + (part == 'norm')}.weight"
            ours[target] = value.reshape(-1) if part == "norm" else value
        elif key.startswith(VIT):
            vit[key[len(VIT):]] = value
        elif key in _FIXED_KEYS:
            ours[_FIXED_KEYS[key]] = _flatten_norm(_FIXED_KEYS[key], value)
        elif match := _STAGE_KEY.match(key):
            stage, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            kinds = kinds_by_stage.setdefault(stage, _decoder_blocks(state, stage))
            table = _BLOCK_KEYS[kinds[index]]
            if rest not in table:
                raise OfficialFormatError(f"unrecognized decoder key {key!r}")
            ours[f"decoder.stages.{stage}.{index}.{table[rest]}"] = _flatten_norm(table[rest], value)
        else:
            raise OfficialFormatError(f"unrecognized key {key!r} in an official checkpoint")
    return ours, vit


def load_vit_weights(vit: nn.Module, meta_state: dict[str, torch.Tensor]) -> list[str]:
    """Load Meta-named DINOv3 weights into a timm ViT; returns the ViT keys still missing.

    The release replaces the ViT's patch embedding by the stem, so its file has
    no ``patch_embed.proj``: the teacher path then needs ``--teacher-weights``.
    """
    from timm.models.eva import checkpoint_filter_fn

    if not meta_state:
        return list(vit.state_dict())
    converted = checkpoint_filter_fn(meta_state, vit)
    missing, unexpected = vit.load_state_dict(converted, strict=False)
    if unexpected:
        raise OfficialFormatError(f"ViT keys the timm model does not have: {sorted(unexpected)[:5]}")
    return list(missing)
