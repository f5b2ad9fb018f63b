"""Rebuilding trained models from files: this toolkit's run directories and checkpoints, and the
official release's autoencoder files. ``load_model`` dispatches on what a checkpoint holds."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from dinosae.config import AEConfig, DiTConfig, from_dict, read_saved_dit
from dinosae.io.checkpoint import (Checkpoint, CheckpointError, load_checkpoint, load_weights, resolve_checkpoint,
                                   saved_weights)
from dinosae.io.official import (OfficialFormatError, infer_config, is_official, map_official, read_settings,
                                 read_state_dict)
from dinosae.io.pretrained import from_pretrained, is_pretrained, read_pretrained_config
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.models.vit import RandomTeacherWarning, load_vit_state

logger = logging.getLogger(__name__)

# What a checkpoint's meta.json says it holds.
AUTOENCODER = "autoencoder"
DIT = "dit"
# The discriminator's heads are saved beside an autoencoder's weights under "discriminator.".
DISCRIMINATOR = "discriminator"


def load_model(path: str | os.PathLike, *, teacher_weights: str | os.PathLike | None = None, use_ema: bool = True,
               device: str | torch.device = "cpu") -> nn.Module:
    """The trained model in a run directory, checkpoint, exported model folder or official file, in eval mode.

    An autoencoder or a DiT, by the checkpoint's (or folder's) ``kind``; official
    release files are autoencoders. ``teacher_weights`` is for autoencoders (see
    :func:`load_autoencoder`). EMA weights are used where present; an exported
    folder (``dinosae export``, ``save_pretrained``) holds one set of weights,
    which ``use_ema`` does not change.

    Example:
        >>> import tempfile, dinosae
        >>> from dinosae.io.checkpoint import save_checkpoint
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> run = tempfile.mkdtemp()
        >>> _ = save_checkpoint(run, Checkpoint(step=1, model=dit.state_dict(),
        ...                     meta={"kind": "dit", "dit_config": dinosae.config.to_dict(dit.config)}))
        >>> type(load_model(run)).__name__
        'DiT'
    """
    if is_pretrained(path):
        if teacher_weights is not None and read_pretrained_config(path)["kind"] == DIT:
            raise CheckpointError(f"{str(path)!r} is a DiT; --teacher-weights is for autoencoders")
        return from_pretrained(path, teacher_weights=teacher_weights, device=device)
    target = resolve_checkpoint(path)
    if target.is_dir() and load_checkpoint_meta(target).get("kind") == DIT:
        if teacher_weights is not None:
            raise CheckpointError(f"{str(target)!r} is a DiT; --teacher-weights is for autoencoders")
        return load_dit(target, use_ema=use_ema, device=device)
    return load_autoencoder(target, teacher_weights=teacher_weights, use_ema=use_ema, device=device)


def load_checkpoint_meta(directory: os.PathLike) -> dict:
    """A checkpoint directory's ``meta.json`` without reading its weights."""
    try:
        return json.loads((Path(directory) / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(directory)!r} has no readable meta.json: {error}") from error


def model_record(path: str | os.PathLike) -> dict:
    """What a run, checkpoint or exported folder records beside its weights (``kind``, ``train_config``,
    ``classes``, ...): the checkpoint's ``meta.json`` or the folder's ``config.json``; ``{}`` for an
    official release file.

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> folder = dit.save_pretrained(tempfile.mkdtemp() + "/dit", record={"classes": ["a", "b", "c"]})
        >>> model_record(folder)["classes"]
        ['a', 'b', 'c']
    """
    if is_pretrained(path):
        return read_pretrained_config(path)
    target = resolve_checkpoint(path)
    return {} if target.is_file() else load_checkpoint_meta(target)


def split_weights(weights: dict[str, torch.Tensor], names: Iterable[str]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """A run's saved weights as the model's own and, per name in ``names``, those saved under ``"<name>."``.

    Example:
        >>> split_weights({"w": 1, "discriminator.h": 2}, ["discriminator"])
        ({'w': 1}, {'discriminator': {'h': 2}})
    """
    own: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    for key, value in weights.items():
        owner = next((name for name in parts if key.startswith(f"{name}.")), None)
        if owner is None:
            own[key] = value
        else:
            parts[owner][key[len(owner) + 1:]] = value
    return own, parts


def autoencoder_weights(model_state: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                        use_ema: bool) -> dict[str, torch.Tensor]:
    """The autoencoder's weights of a checkpoint, with the EMA averages in place where present."""
    weights, _ = split_weights(model_state, [DISCRIMINATOR])
    if use_ema and ema:
        weights.update({k: v for k, v in ema.items() if k in weights})
    return weights


def load_autoencoder(path: str | os.PathLike, *, teacher_weights: str | os.PathLike | None = None,
                     use_ema: bool = True, device: str | torch.device = "cpu") -> SphericalAutoencoder:
    """An autoencoder in eval mode from a run directory, checkpoint directory, exported folder or official file.

    ``teacher_weights`` overrides the ViT weights file recorded in the
    checkpoint (needed when that file has moved, and for official files that
    carry no ViT weights); see :func:`dinosae.io.pretrained.from_pretrained`
    for what it does with an exported folder.
    """
    if is_pretrained(path):
        return from_pretrained(path, kind=AUTOENCODER, teacher_weights=teacher_weights, device=device)
    target = resolve_checkpoint(path)
    if target.is_file():
        model = _load_official(target, teacher_weights)
    else:
        checkpoint = load_checkpoint(target, with_state=False)
        if checkpoint.meta.get("kind") != AUTOENCODER:
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
        load_run_weights(model, checkpoint, teacher_weights, str(target), use_ema)
    return model.to(device).eval()


def load_run_weights(model: SphericalAutoencoder, checkpoint: Checkpoint, teacher_weights: str | os.PathLike | None,
                     source: str, use_ema: bool = True) -> None:
    """Load an autoencoder run's weights into ``model`` (built with ``teacher_weights``, if any), and whether
    its teacher is missing: a run without one (fine-tuned from an official file) passes that on, unless
    ``teacher_weights`` now give the teacher its own patch embedding."""
    weights = autoencoder_weights(checkpoint.model, checkpoint.ema, use_ema)
    missing = checkpoint.meta.get("teacher_missing")
    if missing is not None and teacher_weights is not None:
        # The run had no teacher: its patch embedding is a random stand-in, the given file's is the teacher.
        weights = {k: v for k, v in weights.items() if not k.startswith("encoder.vit.patch_embed.")}
        missing = None
    load_weights(model, weights, source)
    model.encoder.teacher_missing = missing


def _load_official(path: os.PathLike, teacher_weights: str | os.PathLike | None) -> SphericalAutoencoder:
    """The release's autoencoder from its weights file and the settings beside it (``dinosae.io.official``)."""
    state, which = read_state_dict(path)
    if not is_official(state):
        raise CheckpointError(f"{str(path)!r} is a weights file in neither this toolkit's layout (a run or "
                              "checkpoint directory) nor the official release's")
    config = infer_config(state, read_settings(path))
    ours, vit_state = map_official(state)
    if not vit_state and teacher_weights is None:
        raise OfficialFormatError(f"{str(path)!r} carries no DINOv3 weights; pass --teacher-weights FILE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        model = SphericalAutoencoder(config, teacher_weights)
    if vit_state:
        missing = load_vit_state(model.encoder.vit, vit_state, str(path), config.vit)
        if any(not k.startswith("patch_embed.") for k in missing):
            raise OfficialFormatError(f"{str(path)!r} lacks ViT weights {missing[:5]}")
    model.teacher_origin = str(teacher_weights or path)
    if teacher_weights is None:
        # The stem replaced the ViT's patch embedding, so the file has none: the teacher cannot run.
        model.encoder.teacher_missing = (f"the official file {str(path)!r} carries no patch embedding for it; "
                                         "pass --teacher-weights FILE")
    load_weights(model, ours, str(path), optional=("encoder.vit.",))
    logger.info("loaded %s of the official file %s", which, path)
    return model


def dit_from_checkpoint(checkpoint: Checkpoint, *, use_ema: bool = True) -> DiT:
    """The DiT of a loaded checkpoint, in eval mode, with its EMA weights by default."""
    if checkpoint.meta.get("kind") != DIT:
        raise CheckpointError(f"{str(checkpoint.path)!r} is a {checkpoint.meta.get('kind')!r} checkpoint, not a DiT")
    saved = read_saved_dit(checkpoint.meta["dit_config"], checkpoint.meta.get("train_config", {}))
    model = DiT(from_dict(DiTConfig, saved.model))
    weights = dict(checkpoint.model)
    if use_ema and checkpoint.ema:
        weights.update(checkpoint.ema)
    if saved.output_gain != 1.0:  # a run from before the flow layer: its network predicted other units
        weights.update({name: weights[name] * saved.output_gain
                        for name in ("final_layer.linear.weight", "final_layer.linear.bias")})
    model.load_state_dict(weights)
    return model.eval()


def load_dit(path: str | os.PathLike, *, use_ema: bool = True, device: str | torch.device = "cpu") -> DiT:
    """A trained DiT in eval mode from a run or checkpoint directory, or an exported folder (which holds one
    set of weights: ``use_ema`` does not apply)."""
    if is_pretrained(path):
        return from_pretrained(path, kind=DIT, device=device)
    return dit_from_checkpoint(load_checkpoint(path, with_state=False), use_ema=use_ema).to(device)
