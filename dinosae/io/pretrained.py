"""Hub-style model folders, the layout diffusers and timm share, so that a trained model can be shared
and loaded without its training run::

    FOLDER/config.json          what rebuilds the model (below); its "format" key marks it as this toolkit's
    FOLDER/model.safetensors    the weights, every tensor as it was (dtype included)
    FOLDER/README.md            a model card, when ``dinosae export`` wrote the folder

``config.json`` holds ``format`` (``"dinosae-pretrained"``), ``format_version``, ``kind``
(``"autoencoder"`` or ``"dit"``), ``config`` (the model's config as ``dinosae.config.to_dict`` writes
it) and the version of dinosae that wrote it. An autoencoder's also says whether its frozen ViT is in
the weights (``vit_included``), which teacher-weights file it needs when it is not
(``teacher_weights``), where the ViT came from (``teacher_origin``: a file, None when random),
``teacher_random``, and why the teacher cannot run if it cannot (``teacher_missing``: an official
release file carries no patch embedding). Whatever else the writer records (``dinosae export``: the
training config, class names, the run and step) sits beside them.

By default the ViT is included: the folder is self-contained, and a random-teacher model (whose ViT no
file can rebuild) reloads exactly. Folders are written aside and renamed into place, so a crash never
leaves a half-written folder under the final name. A local folder loads offline; a Hugging Face Hub
repo id (``owner/name``, not an existing path) is fetched with ``huggingface_hub.snapshot_download``
(only ``config.json`` and ``model.safetensors``).

Example:
    >>> import tempfile, torch, dinosae
    >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3, hidden_size=32, depth=1,
    ...                            num_heads=2).to(torch.bfloat16)
    >>> folder = save_pretrained(dit, tempfile.mkdtemp() + "/dit")
    >>> same = from_pretrained(folder)
    >>> type(same).__name__, same.x_embedder.weight.dtype, torch.equal(same.x_embedder.weight, dit.x_embedder.weight)
    ('DiT', torch.bfloat16, True)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from dinosae import __version__
from dinosae.config import AEConfig, ConfigError, DiTConfig, from_dict, to_dict
from dinosae.io.atomic import fsync_dir, fsync_file, naming, temporary_dir
from dinosae.io.checkpoint import CheckpointError, check_finite, load_weights
from dinosae.io.tensor_files import read_safetensors
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.models.vit import RandomTeacherWarning, family_name

__all__ = ["CONFIG", "FORMAT", "FORMAT_VERSION", "PretrainedError", "WEIGHTS", "from_pretrained", "is_pretrained",
           "looks_like_repo_id", "read_pretrained_config", "resolve_pretrained", "save_pretrained"]

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FORMAT = "dinosae-pretrained"
FORMAT_VERSION = 1
KINDS: dict[str, tuple[type[nn.Module], type]] = {"autoencoder": (SphericalAutoencoder, AEConfig),
                                                   "dit": (DiT, DiTConfig)}
# The keys save_pretrained owns; a writer's extra record may not replace them.
RESERVED = frozenset({"format", "format_version", "kind", "config", "dinosae_version", "vit_included",
                      "teacher_weights", "teacher_origin", "teacher_random", "teacher_missing"})
VIT_PREFIX = "encoder.vit."
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class PretrainedError(CheckpointError):
    """A path or repo id that does not hold a usable model folder (a ``CheckpointError``, so that every
    command reports it in one line).

    Example:
        >>> from_pretrained("/nonexistent/folder")
        Traceback (most recent call last):
        ...
        dinosae.io.pretrained.PretrainedError: '/nonexistent/folder' does not exist
    """


def kind_of(model: nn.Module) -> str:
    """``"autoencoder"`` or ``"dit"``: the kind a model's folder records.

    Example:
        >>> import dinosae
        >>> kind_of(dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2))
        'dit'
    """
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"save_pretrained takes a SphericalAutoencoder or a DiT, not a {type(model).__name__}")


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, include_vit: bool = True,
                    record: dict[str, Any] | None = None, card: str | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``model`` as ``directory/config.json`` + ``model.safetensors`` (+ ``README.md`` = ``card``).

    ``include_vit=False`` leaves an autoencoder's frozen ViT out; the folder then needs the model's
    teacher-weights file to load (a random ViT cannot be left out: nothing could rebuild it).
    ``record`` adds JSON fields to ``config.json`` (not the ones listed in ``RESERVED``). A non-empty
    ``directory`` is refused unless ``overwrite``, which replaces it whole. Returns ``directory``.

    Example:
        >>> import tempfile, json, warnings, dinosae
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     ae = dinosae.create_model("ae-tiny")
        >>> folder = save_pretrained(ae, tempfile.mkdtemp() + "/ae", record={"note": "a demo"})
        >>> saved = json.loads((folder / "config.json").read_text())
        >>> saved["kind"], saved["vit_included"], saved["teacher_random"], saved["note"]
        ('autoencoder', True, True, 'a demo')
    """
    kind = kind_of(model)
    record = dict(record or {})
    clash = sorted(RESERVED & set(record))
    if clash:
        raise ValueError(f"save_pretrained's record may not set {clash}: save_pretrained writes them")
    weights = model.state_dict()
    config: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                              "config": to_dict(model.config), "dinosae_version": __version__}
    if kind == "autoencoder":
        if not include_vit:
            if model.teacher_weights is None:
                raise ValueError("include_vit=False needs a ViT read from a teacher-weights file; this model's "
                                 "is not (random, or reloaded from elsewhere), and nothing else could rebuild it")
            weights = {k: v for k, v in weights.items() if not k.startswith(VIT_PREFIX)}
        origin = getattr(model, "teacher_origin", model.teacher_weights)
        missing = model.encoder.teacher_missing
        config.update(vit_included=include_vit, teacher_weights=None if include_vit else model.teacher_weights,
                      teacher_origin=origin, teacher_random=origin is None and missing is None,
                      teacher_missing=missing)
    config.update(record)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    check_finite(tensors, "weight")
    text = json.dumps(config, indent=2, sort_keys=True)  # before anything is written: a bad record fails here
    files = {WEIGHTS: lambda path: save_file(tensors, path, metadata={"format": "pt"})}
    if card is not None:
        files[CARD] = lambda path: path.write_text(card)
    files[CONFIG] = lambda path: path.write_text(text + "\n")
    return write_folder(directory, files, overwrite)


def write_folder(directory: str | os.PathLike, files: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``files`` (name -> ``write(path)``) as the folder ``directory``, atomically: they are written
    into a staging folder beside it, flushed, and the folder is renamed into place. A non-empty
    ``directory`` is refused unless ``overwrite``, which replaces it (only once the new one is whole).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> _ = write_folder(target, {"a.txt": lambda path: path.write_text("a")})
        >>> write_folder(target, {"b.txt": lambda path: path.write_text("b")})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileExistsError: ... is not empty; pass overwrite=True (dinosae export --force) to replace it
        >>> _ = write_folder(target, {"b.txt": lambda path: path.write_text("b")}, overwrite=True)
        >>> sorted(p.name for p in target.iterdir())
        ['b.txt']
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{str(directory)!r} is a file, not a folder")
    occupied = directory.is_dir() and any(directory.iterdir())
    if occupied and not overwrite:
        raise FileExistsError(f"{str(directory)!r} is not empty; pass overwrite=True (dinosae export --force) to replace it")
    parent = directory.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_dir(parent, directory.name)
    aside: Path | None = None
    try:
        for name, write in files.items():
            with naming(directory / name):
                write(staging / name)
                fsync_file(staging / name)
        fsync_dir(staging)
        if occupied:
            aside = temporary_dir(parent, f"old.{directory.name}")
            os.replace(directory, aside / directory.name)
        elif directory.is_dir():
            directory.rmdir()  # an empty folder: rename() would replace it, but only on POSIX
        os.replace(staging, directory)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None and not directory.exists() and (aside / directory.name).exists():
            os.replace(aside / directory.name, directory)  # the old folder back where it was
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return directory


def is_pretrained(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that :func:`save_pretrained` wrote: its ``config.json`` has this
    toolkit's format key (a run directory's ``config.json`` has not). The weights beside it are checked
    when it loads, so that a folder missing them gets that reason rather than "not a checkpoint".

    Example:
        >>> import tempfile
        >>> is_pretrained(tempfile.mkdtemp())
        False
    """
    path = Path(path)
    if not (path / CONFIG).is_file():
        return False
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_pretrained_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder; a ``PretrainedError`` saying what is wrong.

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> read_pretrained_config(save_pretrained(dit, tempfile.mkdtemp() + "/d"))["config"]["in_dim"]
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


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repo id, ``owner/name``.

    Example:
        >>> looks_like_repo_id("wkdgnsgo/dino-sae"), looks_like_repo_id("/abs/path"), looks_like_repo_id("a/b/c")
        (True, False, False)
    """
    return bool(_REPO_ID.match(text)) and ".." not in text


def resolve_pretrained(source: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of ``source``: itself if it exists, else the Hub repo ``owner/name`` downloaded
    (``config.json`` and ``model.safetensors`` only) into the Hugging Face cache.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> resolve_pretrained(folder) == Path(folder)
        True
    """
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise PretrainedError(f"{str(source)!r} is a file, not a model folder")
        return path
    if not looks_like_repo_id(str(source)):
        raise PretrainedError(f"{str(source)!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(str(source), revision=revision, allow_patterns=[CONFIG, WEIGHTS],
                                  library_name="dinosae", library_version=__version__)
    except Exception as error:  # the hub's errors have no common base (HTTP, offline mode, bad id, cache I/O)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PretrainedError(f"{str(source)!r} is not a local folder, and downloading it from the Hugging Face "
                              f"Hub failed: {reason[:300]}") from error
    return Path(local)


def from_pretrained(source: str | os.PathLike, *, kind: str | None = None,
                    teacher_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                    revision: str | None = None) -> nn.Module:
    """The model in a folder written by :func:`save_pretrained`, or in a Hub repo ``owner/name``, in eval mode.

    ``kind`` (``"autoencoder"`` or ``"dit"``) refuses a folder of the other kind. ``teacher_weights``
    is the DINOv3 file of an autoencoder whose folder leaves the ViT out (else the file it names), or
    supplies the patch embedding an official release's ViT lacks; a ViT in the folder is used as it is.
    Tensors load as they were saved, dtype included. ``revision`` is a Hub branch, tag or commit.

    Example:
        >>> import tempfile, dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, hidden_size=32, depth=1, num_heads=2)
        >>> folder = save_pretrained(dit, tempfile.mkdtemp() + "/dit")
        >>> from_pretrained(folder, kind="autoencoder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dinosae.io.pretrained.PretrainedError: '...' holds a DiT, not an autoencoder
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    folder = resolve_pretrained(source, revision)
    config = read_pretrained_config(folder)
    if kind is not None and config["kind"] != kind:
        raise PretrainedError(f"{str(source)!r} holds {_named(config['kind'])}, not {_named(kind)}")
    cls, config_cls = KINDS[config["kind"]]
    try:
        model_config = from_dict(config_cls, config["config"], "config")
    except (ConfigError, KeyError) as error:
        raise PretrainedError(f"{str(folder / CONFIG)!r}: {error}") from error
    try:
        weights = read_safetensors(folder / WEIGHTS)
    except (OSError, ValueError, SafetensorError) as error:
        raise PretrainedError(f"{str(folder / WEIGHTS)!r} is unreadable: {' '.join(str(error).split())}") from error
    if cls is DiT:
        model = DiT(model_config)
        _load(model, weights, str(folder))
    else:
        model = _autoencoder(model_config, config, weights, folder, teacher_weights)
    return model.to(device).eval()


def _autoencoder(ae_config: AEConfig, config: dict[str, Any], weights: dict[str, torch.Tensor], folder: Path,
                 teacher_weights: str | os.PathLike | None) -> SphericalAutoencoder:
    included = bool(config.get("vit_included", True))
    missing = config.get("teacher_missing")
    replace_patch_embed = included and missing is not None and teacher_weights is not None
    if included:
        # The folder's ViT is used as it is: a file is read only for the patch embedding it lacks.
        teacher = teacher_weights if replace_patch_embed else None
    else:
        teacher = teacher_weights or config.get("teacher_weights")
        if teacher is None:
            raise PretrainedError(f"{str(folder)!r} leaves the ViT out and names no teacher file; pass "
                                  "teacher_weights (--teacher-weights FILE)")
    if teacher is not None and not os.path.isfile(teacher):
        raise PretrainedError(f"the teacher weights {str(teacher)!r} that {str(folder)!r} needs are missing; "
                              "pass teacher_weights (--teacher-weights FILE)")
    if config.get("teacher_random"):
        # Said once per load, loud: a shared folder's user did not see the training run's warning.
        warnings.warn(f"{str(folder)!r} has a random ViT teacher (it was made without {family_name(ae_config.vit)} "
                      "weights): its latents and reconstructions are not DINO-SAE's", RandomTeacherWarning,
                      stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)  # the ViT's random weights are replaced below
        model = SphericalAutoencoder(ae_config, teacher)
    if replace_patch_embed:
        weights = {k: v for k, v in weights.items() if not k.startswith(f"{VIT_PREFIX}patch_embed.")}
        missing = None
    _load(model, weights, str(folder))
    model.teacher_origin = config.get("teacher_origin") if included else str(teacher)
    model.encoder.teacher_missing = missing
    return model


def _load(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load ``weights`` bit for bit, in the dtypes they were saved in: every key the model saves (an
    autoencoder given a teacher file does not save its ViT) and no other."""
    dtypes = {t.dtype for t in weights.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        # The whole model in the saved dtype, non-persistent buffers too (they enter the outputs).
        model.to(dtype=next(iter(dtypes)))
    # Mixed dtypes: keep each saved tensor as it is rather than cast it into the model's.
    load_weights(model, weights, source, assign=len(dtypes) > 1, error=PretrainedError)


def _named(kind: str) -> str:
    return {"autoencoder": "an autoencoder", "dit": "a DiT"}.get(kind, repr(kind))

