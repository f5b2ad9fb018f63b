"""The exported model folder, the layout that Hugging Face's hub, diffusers and timm share::

    FOLDER/config.json          what rebuilds the model (below); its "format" key marks it as this toolkit's
    FOLDER/model.safetensors    the weights, every tensor as it was (dtype included)
    FOLDER/README.md            the model card

``config.json`` holds ``format`` (``"dinosae-pretrained"``), ``format_version``, ``kind``
(``"autoencoder"`` or ``"dit"``), ``config`` (the model's config as ``dinosae.config.to_dict`` writes
it) and the version of dinosae that wrote it. An autoencoder's also says whether its frozen ViT is in
the weights (``vit_included``), which teacher-weights file it needs when it is not
(``teacher_weights``), where the ViT came from (``teacher_origin``: a file, None when random),
``teacher_random``, and why the teacher cannot run if it cannot (``teacher_missing``: an official
release file carries no patch embedding). Whatever else the writer records (``dinosae export``: the
training config, class names, the run and step) sits beside them.

This module reads and lays out such folders; :mod:`dinosae.models.hub` writes them (atomically, through
huggingface_hub's ``ModelHubMixin``) and fetches them from the Hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from dinosae._version import __version__
from dinosae.config import AEConfig, ConfigError, DiTConfig, from_dict, to_dict
from dinosae.io.checkpoint import CheckpointError, check_finite
from dinosae.io.tensor_files import read_safetensors
from dinosae.models.record import AUTOENCODER, DIT, KINDS, VIT_PREFIX, ModelRecord, Teacher

__all__ = ["CARD", "CONFIG", "FORMAT", "FORMAT_VERSION", "PretrainedError", "RESERVED", "WEIGHTS", "folder_contents",
           "is_model_folder", "read_folder", "read_folder_config"]

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FORMAT = "dinosae-pretrained"
FORMAT_VERSION = 1
CONFIG_CLASSES = {AUTOENCODER: AEConfig, DIT: DiTConfig}
# The keys the folder's writer owns; a caller's extra record may not replace them.
RESERVED = frozenset({"format", "format_version", "kind", "config", "dinosae_version", "vit_included",
                      "teacher_weights", "teacher_origin", "teacher_random", "teacher_missing"})


class PretrainedError(CheckpointError):
    """A path or repo id that does not hold a usable model folder (a ``CheckpointError``, so that every
    command reports it in one line).

    Example:
        >>> read_folder("/nonexistent/folder")
        Traceback (most recent call last):
        ...
        dinosae.models.folder.PretrainedError: '/nonexistent/folder' has no config.json: not a model folder (see dinosae export)
    """


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that this toolkit exported: its ``config.json`` has this toolkit's
    format key (a run directory's ``config.json`` has not). The weights beside it are checked when it
    loads, so that a folder missing them gets that reason rather than "not a checkpoint".

    Example:
        >>> import tempfile
        >>> is_model_folder(tempfile.mkdtemp())
        False
    """
    path = Path(path)
    if not (path / CONFIG).is_file():
        return False
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder; a ``PretrainedError`` saying what is wrong.

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> read_folder_config(dit.save_pretrained(tempfile.mkdtemp() + "/d"))["config"]["in_dim"]
        8
    """
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise PretrainedError(f"{str(folder)!r} has no {CONFIG}: not a model folder (see dinosae export)")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as error:
        raise PretrainedError(f"{str(folder / CONFIG)!r} is unreadable: {' '.join(str(error).split())}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PretrainedError(f"{str(folder / CONFIG)!r} is not a dinosae model's (its \"format\" is not "
                              f"{FORMAT!r}): another library's folder, or not a model folder")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PretrainedError(f"{str(folder)!r} has format version {version!r}; this dinosae reads up to "
                              f"{FORMAT_VERSION} (a newer dinosae wrote it)")
    if config.get("kind") not in KINDS:
        raise PretrainedError(f"{str(folder)!r} holds a model of unknown kind {config.get('kind')!r}; expected "
                              f"one of {sorted(KINDS)}")
    if not (folder / WEIGHTS).is_file():
        raise PretrainedError(f"{str(folder)!r} has no {WEIGHTS}")
    return config


def read_folder(folder: str | os.PathLike) -> ModelRecord:
    """The model in an exported folder, as a record (see ``dinosae.models.record``).

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> record = read_folder(dit.save_pretrained(tempfile.mkdtemp() + "/d", record={"classes": ["a"]}))
        >>> record.kind, record.released, record.meta["classes"]
        ('dit', True, ['a'])
    """
    folder = Path(folder)
    config = read_folder_config(folder)
    try:
        model_config = from_dict(CONFIG_CLASSES[config["kind"]], config["config"], "config")
    except (ConfigError, KeyError) as error:
        raise PretrainedError(f"{str(folder / CONFIG)!r}: {error}") from error
    try:
        weights = read_safetensors(folder / WEIGHTS)
    except (OSError, ValueError, SafetensorError) as error:
        raise PretrainedError(f"{str(folder / WEIGHTS)!r} is unreadable: {' '.join(str(error).split())}") from error
    teacher = Teacher()
    if config["kind"] == AUTOENCODER:
        included = bool(config.get("vit_included", True))
        teacher = Teacher(file=None if included else config.get("teacher_weights"),
                          origin=config.get("teacher_origin") if included else None,
                          missing=config.get("teacher_missing"))
    return ModelRecord(config["kind"], model_config, weights, source=str(folder), path=folder, teacher=teacher,
                       meta=config, released=True)


def folder_contents(model: Any, include_vit: bool = True, record: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``config.json`` and the tensors of ``model``'s folder, checked before anything is written.

    ``include_vit=False`` leaves an autoencoder's frozen ViT out; the folder then needs the model's
    teacher-weights file to load (a random ViT cannot be left out: nothing could rebuild it).
    ``record`` adds JSON fields to ``config.json`` (not the ones listed in ``RESERVED``).

    Example:
        >>> import dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> config, tensors = folder_contents(dit, record={"note": "a demo"})
        >>> config["kind"], config["note"], "x_embedder.weight" in tensors
        ('dit', 'a demo', True)
    """
    kind = getattr(model, "pretrained_kind", None)
    if kind not in KINDS:
        raise TypeError(f"a model folder holds a SphericalAutoencoder or a DiT, not a {type(model).__name__}")
    record = dict(record or {})
    clash = sorted(RESERVED & set(record))
    if clash:
        raise ValueError(f"save_pretrained's record may not set {clash}: save_pretrained writes them")
    weights = model.state_dict()
    config: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                              "config": to_dict(model.config), "dinosae_version": __version__}
    if kind == AUTOENCODER:
        if not include_vit:
            if model.teacher_weights is None:
                raise ValueError("include_vit=False needs a ViT read from a teacher-weights file; this model's "
                                 "is not (random, or reloaded from elsewhere), and nothing else could rebuild it")
            weights = {k: v for k, v in weights.items() if not k.startswith(VIT_PREFIX)}
        origin, missing = model.teacher_origin, model.encoder.teacher_missing
        config.update(vit_included=include_vit, teacher_weights=None if include_vit else model.teacher_weights,
                      teacher_origin=origin, teacher_random=origin is None and missing is None,
                      teacher_missing=missing)
    config.update(record)
    json.dumps(config)  # a record that JSON cannot hold fails here, before anything is written
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    check_finite(tensors, "weight")
    return config, tensors
