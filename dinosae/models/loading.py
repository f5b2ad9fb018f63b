"""Rebuilding an autoencoder from a checkpoint: this toolkit's run directories or the official release."""

from __future__ import annotations

import os
import warnings

import torch

from dinosae.config import AEConfig, from_dict
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.official import OfficialFormatError, infer_config, is_official, load_vit_weights, map_official, read_state_dict
from dinosae.models.vit import RandomTeacherWarning
from dinosae.train.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

DISCRIMINATOR = "discriminator."


def autoencoder_weights(model_state: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                        use_ema: bool) -> dict[str, torch.Tensor]:
    """The autoencoder's weights of a checkpoint, with the EMA averages in place where present."""
    weights = {k: v for k, v in model_state.items() if not k.startswith(DISCRIMINATOR)}
    if use_ema and ema:
        weights.update({k: v for k, v in ema.items() if k in weights})
    return weights


def load_autoencoder(path: str | os.PathLike, *, teacher_weights: str | os.PathLike | None = None,
                     use_ema: bool = True, device: str | torch.device = "cpu") -> SphericalAutoencoder:
    """An autoencoder in eval mode from a run directory, checkpoint directory or official file.

    ``teacher_weights`` overrides the ViT weights file recorded in the
    checkpoint (needed when that file has moved, and for official files that
    carry no ViT weights).
    """
    target = resolve_checkpoint(path)
    if target.is_file():
        model = _load_official(target, teacher_weights)
    else:
        checkpoint = load_checkpoint(target, with_state=False)
        if checkpoint.meta.get("kind") != "autoencoder":
            raise CheckpointError(f"{str(target)!r} is a {checkpoint.meta.get('kind')!r} checkpoint, "
                                  "not an autoencoder")
        config = from_dict(AEConfig, checkpoint.meta["ae_config"])
        teacher = teacher_weights or checkpoint.meta.get("teacher_weights")
        if teacher is not None and not os.path.isfile(teacher):
            raise CheckpointError(f"the checkpoint's teacher weights {teacher!r} are missing; "
                                  "pass --teacher-weights FILE")
        with warnings.catch_warnings():
            # A checkpoint of a random-teacher run carries that ViT; the warning was given at training.
            warnings.simplefilter("ignore", RandomTeacherWarning)
            model = SphericalAutoencoder(config, teacher)
        weights = autoencoder_weights(checkpoint.model, checkpoint.ema, use_ema)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        _check_keys(missing, unexpected, vit_optional=teacher is not None, source=str(target))
    return model.to(device).eval()


def _check_keys(missing: list[str], unexpected: list[str], vit_optional: bool, source: str) -> None:
    missing = [k for k in missing if not (vit_optional and k.startswith("encoder.vit."))]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")


def _load_official(path: os.PathLike, teacher_weights: str | os.PathLike | None) -> SphericalAutoencoder:
    state = read_state_dict(path)
    if not is_official(state):
        raise CheckpointError(f"{str(path)!r} is a weights file in neither this toolkit's layout (a run or "
                              "checkpoint directory) nor the official release's")
    config = infer_config(state)
    ours, vit_state = map_official(state)
    with warnings.catch_warnings():
        if vit_state or teacher_weights:
            warnings.simplefilter("ignore", RandomTeacherWarning)
        model = SphericalAutoencoder(config, teacher_weights)
    missing_vit = load_vit_weights(model.encoder.vit, vit_state) if vit_state else []
    if not vit_state and teacher_weights is None:
        raise OfficialFormatError(f"{str(path)!r} carries no DINOv3 weights; pass --teacher-weights FILE")
    if teacher_weights is None and any(not k.startswith("patch_embed.") for k in missing_vit):
        raise OfficialFormatError(f"{str(path)!r} lacks ViT weights {missing_vit[:5]}")
    missing, unexpected = model.load_state_dict(ours, strict=False)
    _check_keys(missing, unexpected, vit_optional=True, source=str(path))
    return model
