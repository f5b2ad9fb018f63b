"""One loader for every model file, timm-style: a reader per format, one record, one builder.

The formats, and the reader of each (:func:`read_model` picks by what the path holds):

- a training run or one of its checkpoints (``RUN``, ``RUN/checkpoints/step_N``): :func:`read_run`;
- an exported model folder (``dinosae export``, ``save_pretrained``): ``dinosae.models.folder.read_folder``;
- an official release file (``release.pth`` and the ``release.json`` beside it):
  ``dinosae.models.official.read_official``;
- a Hugging Face Hub repo id (``owner/name``, where no such path exists): an exported folder, fetched by
  ``dinosae.models.hub.download``.

Each gives a :class:`~dinosae.models.record.ModelRecord` (kind, config, weights, teacher, and what
the format records beside them); :func:`build_model` turns it into the model through its class's
``from_record``, which is where an autoencoder's teacher policy lives. :func:`load_model` is the two in
one call, and what every command's ``--ckpt``, ``--ae``, ``--dit`` and ``--init`` go through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from dinosae.config import AEConfig, ConfigError, DiTConfig, from_dict
from dinosae.io.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.models.folder import is_model_folder, read_folder
from dinosae.models.hub import download, looks_like_repo_id
from dinosae.models.official import read_official
from dinosae.models.record import AUTOENCODER, DIT, KINDS, ModelRecord, Teacher, named

__all__ = ["DISCRIMINATOR", "MODELS", "build_model", "load_model", "read_model", "read_run", "split_weights"]

MODELS: dict[str, type[nn.Module]] = {AUTOENCODER: SphericalAutoencoder, DIT: DiT}
CONFIGS = {AUTOENCODER: ("ae_config", AEConfig), DIT: ("dit_config", DiTConfig)}
# The discriminator's heads are saved beside an autoencoder's weights under "discriminator.".
DISCRIMINATOR = "discriminator"


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


def read_run(path: str | os.PathLike, use_ema: bool = True, kind: str | None = None) -> ModelRecord:
    """The model of a run directory (its latest checkpoint) or of a checkpoint directory, as a record: its EMA
    weights where it has them (``use_ema``), its discriminator's heads apart (``parts``), and its meta;
    a checkpoint of another ``kind`` than the one asked for is refused before its config is read.

    Example:
        >>> import tempfile, dinosae
        >>> from dinosae.io.checkpoint import Checkpoint, save_checkpoint
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> run = tempfile.mkdtemp()
        >>> _ = save_checkpoint(run, Checkpoint(step=1, model=dit.state_dict(),
        ...                     meta={"kind": "dit", "dit_config": dinosae.config.to_dict(dit.config)}))
        >>> record = read_run(run)
        >>> record.kind, record.config.in_dim, record.meta["step"]
        ('dit', 8, 1)
    """
    checkpoint = load_checkpoint(path, with_state=False)
    source, meta = str(checkpoint.path), checkpoint.meta
    found = meta.get("kind")
    if found not in KINDS:
        raise CheckpointError(f"{source!r} is a checkpoint of {found!r}, not of a model ({' or '.join(KINDS)})")
    if kind is not None and found != kind:
        raise CheckpointError(f"{source!r} holds {named(found)}, not {named(kind)}")
    kind = found
    key, config_class = CONFIGS[kind]
    try:
        config = from_dict(config_class, meta[key], key)
    except KeyError as error:
        raise CheckpointError(f"{source!r}: its meta.json has no {key}") from error
    except ConfigError as error:
        raise CheckpointError(f"{source!r}: {error}") from error
    weights, parts = split_weights(checkpoint.model, [DISCRIMINATOR])
    if use_ema and checkpoint.ema:
        weights.update({name: value for name, value in checkpoint.ema.items() if name in weights})
    teacher = Teacher(file=meta.get("teacher_weights"), origin=meta.get("teacher_origin", meta.get("teacher_weights")),
                      missing=meta.get("teacher_missing"))
    return ModelRecord(kind, config, weights, source=source, path=checkpoint.path, teacher=teacher,
                       parts={name: part for name, part in parts.items() if part}, meta=meta)


def read_model(source: str | os.PathLike, *, kind: str | None = None, use_ema: bool = True,
               revision: str | None = None) -> ModelRecord:
    """The record of whatever ``source`` holds: a run or checkpoint directory, an exported folder, an official
    release file, or a Hub repo id ``owner/name`` (``revision``: its branch, tag or commit). ``kind``
    (``"autoencoder"`` or ``"dit"``) refuses a file of the other kind. ``use_ema`` is for runs; the other
    formats hold one set of weights.

    Example:
        >>> read_model("/nonexistent/run")
        Traceback (most recent call last):
        ...
        dinosae.io.checkpoint.CheckpointError: checkpoint '/nonexistent/run' does not exist
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(source)
    if not path.exists() and looks_like_repo_id(str(source)):
        record = read_folder(download(str(source), revision))
    elif is_model_folder(path):
        record = read_folder(path)
    else:
        target = resolve_checkpoint(path)
        record = read_official(target) if target.is_file() else read_run(target, use_ema, kind)
    if kind is not None and record.kind != kind:
        raise CheckpointError(f"{record.source!r} holds {named(record.kind)}, not {named(kind)}")
    return record


def build_model(record: ModelRecord, teacher_weights: str | os.PathLike | None = None) -> nn.Module:
    """The model a record describes, built by its class (``from_record``), in train mode as any new module.

    ``teacher_weights`` is for autoencoders (see ``SphericalAutoencoder.from_record``).
    """
    if teacher_weights is not None and record.kind != AUTOENCODER:
        raise CheckpointError(f"{record.source!r} is {named(record.kind)}; --teacher-weights is for autoencoders")
    return MODELS[record.kind].from_record(record, teacher_weights)


def load_model(source: str | os.PathLike, *, kind: str | None = None, teacher_weights: str | os.PathLike | None = None,
               use_ema: bool = True, device: str | torch.device = "cpu", revision: str | None = None,
               dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """The trained model in a run directory, checkpoint, exported folder, official file or Hub repo, in eval mode.

    ``kind`` (``"autoencoder"`` or ``"dit"``) refuses a file of the other kind. EMA weights are used where
    a run has them (``use_ema``); ``teacher_weights`` is an autoencoder's teacher file, which overrides
    the one a run or folder names (see ``SphericalAutoencoder.from_record``). The model computes in
    ``dtype``, float32 by default as every command does (a folder saved in bfloat16 or float64, or in mixed
    dtypes, is converted); None keeps every tensor as it was saved (``from_pretrained`` does).

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> folder = dit.save_pretrained(tempfile.mkdtemp() + "/dit")
        >>> type(load_model(folder)).__name__
        'DiT'
        >>> load_model(folder, kind="autoencoder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dinosae.io.checkpoint.CheckpointError: '...' holds a DiT, not an autoencoder
    """
    record = read_model(source, kind=kind, use_ema=use_ema, revision=revision)
    model = build_model(record, teacher_weights)
    return (model if dtype is None else model.to(dtype)).to(device).eval()
