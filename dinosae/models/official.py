"""Reading the official DINO-SAE release (``wkdgnsgo/dino-sae``, and HAE's, which shares its model
code) into this toolkit's modules, computing what the release's own forward pass computes.

The release's model code names the stem ``dino_model.patch_embed.cnn.{i}``, the
frozen DINOv3 ViT ``dino_model.*`` (in Meta's own key names) and the decoder
``decoder.*`` in efficientvit's layout (``op_list``, ``main``/``shortcut``
residual wrappers, stage 0 the deepest). Everything here is an explicit
key-by-key mapping: an unknown key is an error, never silently dropped.

What the weights fix, and ``infer_config`` reads off their names and shapes:
widths, depths and block kinds; pixel-shuffle or interpolating upsampling and
their shortcuts; the input shortcut; whether the head has a norm and whether it
upsamples (a first stage of depth 0); the norms' kind (the release's "trms2d"
is one RMS over (C, H, W) per image, weight (1, C, 1, 1), no bias; DC-AE's is
per pixel, with a bias); whether EfficientViT blocks have norms (the
release's have none); the ViT's width, depth and whether its q/v biases are
non-zero (which timm variant can hold them).

What the weights cannot fix, and a JSON file beside them must state (its
name: the weights' with ``.json`` for the suffix, or appended): the blocks'
and the head's activations (``decoder.act``, ``decoder.out_act``; the release's
code defaults are ``"silu"`` and ``"relu"``), and what the model's pixels mean
(``pixel_input``: ``"imagenet"``, ``"signed"`` or ``"unit"``; ``pixel_output``:
``"signed"`` or ``"unit"``). A file without them is refused, naming what is
missing: a guess would decode other images, silently. The release's decoder
takes the ViT's final-norm tokens as they are, so official files get
``latent_scale="raw_tokens"``; to decode unit latents (a generator's), the JSON
sets ``decode_scale`` (the HAE paper's s_vae: 14).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from dinosae.config import AEConfig, DecoderConfig, merge
from dinosae.io.checkpoint import CheckpointError
from dinosae.io.tensor_files import read_weights
from dinosae.models.record import AUTOENCODER, ModelRecord, Teacher
from dinosae.models.vit import nonzero_qv_biases

logger = logging.getLogger(__name__)

STEM = "dino_model.patch_embed.cnn."
VIT = "dino_model."
DECODER = "decoder."
VIT_BY_DIM = {192: "vit_tiny_patch16_dinov3", 384: "vit_small_patch16_dinov3", 768: "vit_base_patch16_dinov3",
              1024: "vit_large_patch16_dinov3"}
# Timm has only the q/v-bias variant of the tiny ViT.
_ONLY_QKVB = {"vit_tiny_patch16_dinov3"}
# Where wrapped checkpoints keep their weights, in order of preference: an EMA first.
_WRAPPERS = ("ema", "ema_state_dict", "model_ema", "ema_model", "state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")
# What the JSON beside an official file must state: (path in AEConfig, what it is).
REQUIRED_SETTINGS = (
    (("decoder", "act"), "the decoder blocks' activation"),
    (("decoder", "out_act"), "the decoder head's activation"),
    (("pixel_input",), "what the stem sees of an image in [0, 1]"),
    (("pixel_output",), "what the decoder predicts"),
)


class OfficialFormatError(ValueError):
    """A file claimed to be an official checkpoint does not have the expected keys or shapes."""


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The flat tensor dict of a ``.safetensors``/``.pt``/``.pth``/``.ckpt`` file, unwrapped, and
    which weights it is (``"EMA weights under 'ema'"``, ``"weights under 'model'"``, ...).

    Common wrappers (``{"ema": ..., "model": ...}``, ``{"state_dict": ...}``,
    DDP's ``module.``, torch.compile's ``_orig_mod.``) are removed; an EMA is
    preferred over the raw weights beside it.
    """
    state = read_weights(path)
    found = []
    while isinstance(state, dict):
        wrapper = next((w for w in _WRAPPERS if isinstance(state.get(w), dict)), None)
        if wrapper is None:
            break
        found.append(wrapper)
        state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialFormatError(f"{str(path)!r} does not hold a flat dict of tensors")
    for prefix in _PREFIXES:
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    where = "/".join(repr(w) for w in found)
    kind = "EMA weights" if found and "ema" in found[0] else "weights"
    return state, f"{kind} under {where}" if found else "a flat state dict"


def is_official(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` uses the release's key names."""
    return any(k.startswith(STEM) for k in state) and any(k.startswith(DECODER + "stages.") for k in state)


def settings_path(weights: str | os.PathLike) -> Path | None:
    """The JSON file of settings beside an official weights file, if there is one."""
    weights = Path(weights)
    for candidate in (weights.with_suffix(".json"), weights.with_name(weights.name + ".json")):
        if candidate.is_file():
            return candidate
    return None


def read_settings(weights: str | os.PathLike) -> dict[str, Any]:
    """The settings beside ``weights``; refuses a file that lacks any of ``REQUIRED_SETTINGS``."""
    path = settings_path(weights)
    settings: dict[str, Any] = {}
    if path is not None:
        try:
            settings = json.loads(path.read_text())
        except ValueError as error:
            raise OfficialFormatError(f"{str(path)!r} is not valid JSON: {error}") from error
        if not isinstance(settings, dict):
            raise OfficialFormatError(f"{str(path)!r} must hold a JSON object of AEConfig fields")
    missing = [(".".join(field), what) for field, what in REQUIRED_SETTINGS if not _has(settings, field)]
    if missing:
        where = str(path) if path is not None else f"{Path(weights).with_suffix('.json')} (beside the weights)"
        fields = ", ".join(f"{name} ({what})" for name, what in missing)
        raise OfficialFormatError(f"the weights of {str(weights)!r} cannot tell {fields}: state them in {where}, "
                                  'e.g. {"decoder": {"act": "silu", "out_act": "relu"}, "pixel_input": "signed", '
                                  '"pixel_output": "signed"}')
    return settings


def _has(settings: dict[str, Any], field: tuple[str, ...]) -> bool:
    node: Any = settings
    for name in field:
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
    return True


# ---------------------------------------------------------------- the decoder's layout


_STAGE_KEY = re.compile(rf"^{DECODER}stages\.(\d+)\.op_list\.(\d+)\.(.*)$")
# A key whose weight has the block's width as dimension 1, per official block kind.
_WIDTH_KEY = {"res": "main.conv1.conv.weight", "vit": "context_module.main.qkv.conv.weight"}


def _block_kind(rest: str) -> str:
    """``up``, ``up_plain`` (no shortcut), ``res`` or ``vit`` from a key's part after ``op_list.{j}.``."""
    if rest.startswith("main.conv.conv."):
        return "up"
    if rest.startswith("conv.conv."):
        return "up_plain"
    if rest.startswith(("context_module.", "local_module.")):
        return "vit"
    if rest.startswith(("main.conv1.", "main.conv2.")):
        return "res"
    raise OfficialFormatError(f"unrecognized decoder key ...op_list.N.{rest}")


def _stage_blocks(state: dict[str, torch.Tensor]) -> dict[int, dict[int, str]]:
    """Official stage -> block index -> kind."""
    stages: dict[int, dict[int, str]] = {}
    for key in state:
        if match := _STAGE_KEY.match(key):
            stage, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            stages.setdefault(stage, {})[index] = _block_kind(rest)
    return stages


def _head_keys(state: dict[str, torch.Tensor]) -> tuple[bool, str, bool]:
    """(the head has a norm, the prefix of its convolution, the head upsamples)."""
    norm = f"{DECODER}project_out.op_list.0.weight" in state
    conv = f"{DECODER}project_out.op_list.{2 if norm else 1}."
    if conv + "conv.conv.weight" in state:
        return norm, conv + "conv.conv.", True
    if conv + "conv.weight" in state:
        return norm, conv + "conv.", False
    raise OfficialFormatError(f"official checkpoint lacks the decoder head's convolution ({conv}conv.weight)")


def _norm_kind(state: dict[str, torch.Tensor], prefix: str) -> str:
    weight = state[prefix + "weight"]
    if prefix + "running_mean" in state:
        raise OfficialFormatError("BatchNorm decoders (DC-AE's bn2d) are not supported; found "
                                  f"{prefix}running_mean")
    return "image" if weight.dim() == 4 else "pixel"


def infer_config(state: dict[str, torch.Tensor], settings: dict[str, Any], image_size: int = 256) -> AEConfig:
    """The ``AEConfig`` whose modules take the official ``state`` key for key, with ``settings`` (the JSON
    beside it) for what the weights cannot tell."""
    try:
        dim = state[f"{STEM}3.conv.weight"].shape[0]
        stem_norm = _norm_kind(state, f"{STEM}0.norm.")
    except KeyError as error:
        raise OfficialFormatError(f"official checkpoint lacks the stem key {error}") from error
    if dim not in VIT_BY_DIM:
        raise OfficialFormatError(f"no DINOv3 ViT has width {dim}")
    stages = _stage_blocks(state)
    head_norm, head_conv, head_upsamples = _head_keys(state)
    num_stages = max(stages) + 1 + head_upsamples
    widths, depths, blocks = [0] * num_stages, [0] * num_stages, ["res"] * num_stages
    upsample, upsample_shortcut = "interpolate", "duplicate"
    for k, kinds in stages.items():
        s = num_stages - 1 - k
        body = {index: kind for index, kind in kinds.items() if not kind.startswith("up")}
        if len(set(body.values())) > 1:
            raise OfficialFormatError(f"decoder stage {k} mixes block kinds {sorted(set(body.values()))}")
        depths[s] = len(body)
        first = min(body)
        blocks[s] = body[first]
        widths[s] = state[f"{DECODER}stages.{k}.op_list.{first}.{_WIDTH_KEY[blocks[s]]}"].shape[1]
        if kinds[0].startswith("up"):
            upsample_shortcut = "duplicate" if kinds[0] == "up" else None
            up = state[f"{DECODER}stages.{k}.op_list.0.{'main.' if upsample_shortcut else ''}conv.conv.weight"]
            upsample = "pixelshuffle" if up.shape[0] == 4 * widths[s] else "interpolate"
    if head_upsamples:
        widths[0] = widths[1]  # an empty stage has no width of its own
        upsample = "pixelshuffle" if state[head_conv + "weight"].shape[0] == 12 else "interpolate"
    project_in = state.get(f"{DECODER}project_in.main.conv.weight", state.get(f"{DECODER}project_in.conv.weight"))
    if project_in is None:
        raise OfficialFormatError("official checkpoint lacks decoder.project_in")
    norm_keys = [k for k in state if k.startswith(DECODER) and k.endswith("norm.weight")]
    norms = {_norm_kind(state, k[: -len("weight")]) for k in norm_keys}
    if len(norms) > 1:
        raise OfficialFormatError(f"the decoder mixes norm kinds {sorted(norms)}")
    decoder = DecoderConfig(
        widths=tuple(widths), depths=tuple(depths), blocks=tuple(blocks), head_dim=32,
        norm=norms.pop() if norms else "image", vit_norm=any("context_module.main.proj.norm." in k for k in state),
        attention_scales=(), upsample=upsample, upsample_shortcut=upsample_shortcut, out_norm=head_norm,
        in_shortcut=f"{DECODER}project_in.main.conv.weight" in state)
    config = AEConfig(vit=_vit_name(state, dim), image_size=image_size, stem="hierarchical", stem_norm=stem_norm,
                      decoder=decoder, latent_scale="raw_tokens", vit_depth=_vit_depth(state))
    try:
        return merge(config, settings)
    except (TypeError, ValueError) as error:
        raise OfficialFormatError(f"the settings beside the official file do not fit: {error}") from error


def _vit_name(state: dict[str, torch.Tensor], dim: int) -> str:
    """The timm DINOv3 ViT of width ``dim`` that holds the file's q/v biases: they must not be dropped."""
    name = VIT_BY_DIM[dim]
    biased = any(k.startswith(VIT) for k in nonzero_qv_biases(state))
    return f"{name}_qkvb" if biased or name in _ONLY_QKVB else name


def _vit_depth(state: dict[str, torch.Tensor]) -> int | None:
    blocks = {int(m.group(1)) for k in state if (m := re.match(rf"^{VIT}blocks\.(\d+)\.", k))}
    return max(blocks) + 1 if blocks else None


def read_official(path: str | os.PathLike) -> ModelRecord:
    """The autoencoder of an official release file, as a record (``dinosae.models.record``): its stem and
    decoder in this toolkit's names, float32, and its ViT in Meta's names (converted where the ViT is
    built). The release replaced the ViT's patch embedding by the stem, so the teacher is missing until a
    teacher-weights file supplies one.
    """
    state, which = read_state_dict(path)
    if not is_official(state):
        raise CheckpointError(f"{str(path)!r} is a weights file in neither this toolkit's layout (a run or "
                              "checkpoint directory) nor the official release's")
    config = infer_config(state, read_settings(path))
    ours, vit = map_official(state)
    logger.info("loaded %s of the official file %s", which, path)
    missing = (f"the official file {str(path)!r} carries no patch embedding for it; pass --teacher-weights FILE"
               if vit else None)
    return ModelRecord(AUTOENCODER, config, {k: v.float() for k, v in ours.items()}, source=str(path),
                       path=Path(path), teacher=Teacher(origin=str(path) if vit else None, missing=missing),
                       vit=vit or None, meta={"official": str(path)}, released=True)


# ---------------------------------------------------------------- the key mapping


# Official decoder block key (after ``op_list.{j}.``) -> this toolkit's, by block kind.
_BLOCK_KEYS = {
    "up": {"main.conv.conv.weight": "conv.weight", "main.conv.conv.bias": "conv.bias"},
    "up_plain": {"conv.conv.weight": "conv.weight", "conv.conv.bias": "conv.bias"},
    "res": {"main.conv1.conv.weight": "conv1.weight", "main.conv1.conv.bias": "conv1.bias",
            "main.conv2.conv.weight": "conv2.weight", "main.conv2.norm.weight": "norm.weight",
            "main.conv2.norm.bias": "norm.bias"},
    "vit": {"context_module.main.qkv.conv.weight": "attention.qkv.weight",
            "context_module.main.proj.conv.weight": "attention.proj.weight",
            "context_module.main.proj.norm.weight": "attention.norm.weight",
            "context_module.main.proj.norm.bias": "attention.norm.bias",
            "local_module.main.inverted_conv.conv.weight": "mlp.expand.weight",
            "local_module.main.inverted_conv.conv.bias": "mlp.expand.bias",
            "local_module.main.depth_conv.conv.weight": "mlp.depthwise.weight",
            "local_module.main.depth_conv.conv.bias": "mlp.depthwise.bias",
            "local_module.main.point_conv.conv.weight": "mlp.project.weight",
            "local_module.main.point_conv.norm.weight": "mlp.norm.weight",
            "local_module.main.point_conv.norm.bias": "mlp.norm.bias"},
}
_STEM_KEY = re.compile(rf"^{re.escape(STEM)}(\d)\.(conv\.weight|norm\.weight|norm\.bias)$")


def _fixed_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    head_norm, head_conv, head_upsamples = _head_keys(state)
    conv_out = "decoder.conv_out.conv." if head_upsamples else "decoder.conv_out."
    keys = {
        f"{DECODER}project_in.main.conv.weight": "decoder.conv_in.weight",
        f"{DECODER}project_in.main.conv.bias": "decoder.conv_in.bias",
        f"{DECODER}project_in.conv.weight": "decoder.conv_in.weight",
        f"{DECODER}project_in.conv.bias": "decoder.conv_in.bias",
        head_conv + "weight": conv_out + "weight",
        head_conv + "bias": conv_out + "bias",
    }
    if head_norm:
        keys.update({f"{DECODER}project_out.op_list.0.weight": "decoder.norm_out.weight",
                     f"{DECODER}project_out.op_list.0.bias": "decoder.norm_out.bias"})
    return keys


def _flatten_norm(key: str, value: torch.Tensor) -> torch.Tensor:
    # The release stores per-image RMSNorm2d weights as (1, C, 1, 1); ours are (C,).
    return value.reshape(-1) if "norm" in key and value.dim() == 4 else value


def map_official(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an official state dict into (stem + decoder weights in our key names, ViT weights).

    The ViT weights keep Meta's DINOv3 names (without the ``dino_model.``
    prefix); ``dinosae.models.vit.load_vit_state`` converts them.
    """
    ours: dict[str, torch.Tensor] = {}
    vit: dict[str, torch.Tensor] = {}
    stages = _stage_blocks(state)
    fixed = _fixed_keys(state)
    for key, value in state.items():
        if key.startswith(STEM):
            match = _STEM_KEY.match(key)
            if not match:
                raise OfficialFormatError(f"unrecognized stem key {key!r}")
            layer, part = int(match.group(1)), match.group(2)
            index = 3 * layer + (part != "conv.weight")
            ours[f"encoder.stem.layers.{index}.{part.split('.')[-1]}"] = value.reshape(-1) if index % 3 else value
        elif key.startswith(VIT):
            vit[key[len(VIT):]] = value
        elif key in fixed:
            ours[fixed[key]] = _flatten_norm(fixed[key], value)
        elif match := _STAGE_KEY.match(key):
            stage, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            table = _BLOCK_KEYS[stages[stage][index]]
            if rest not in table:
                raise OfficialFormatError(f"unrecognized decoder key {key!r}")
            ours[f"decoder.stages.{stage}.{index}.{table[rest]}"] = _flatten_norm(table[rest], value)
        else:
            raise OfficialFormatError(f"unrecognized key {key!r} in an official checkpoint")
    return ours, vit
