"""``save_pretrained`` / ``from_pretrained`` on the networks, through huggingface_hub's ``ModelHubMixin``.

The mixin brings what the Hub expects of a library (``push_to_hub``, downloads into the Hugging Face
cache, a model card with the library's metadata); this module adds what the toolkit's folders need on
top (:mod:`dinosae.models.folder` is their layout): a folder is written aside and renamed into place, so a
crash never leaves a half-written folder under the final name; an autoencoder may leave its frozen ViT
out; a local folder is read offline by the toolkit's own reader, which refuses a hostile ``config.json``
in one line; and the model is built by its class's ``from_record``, the one place that decides where an
autoencoder's teacher comes from.

Example:
    >>> import tempfile, torch, dinosae
    >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3, hidden_size=32, depth=1,
    ...                            num_heads=2).to(torch.bfloat16)
    >>> folder = dit.save_pretrained(tempfile.mkdtemp() + "/dit")
    >>> same = type(dit).from_pretrained(folder)
    >>> same.x_embedder.weight.dtype, torch.equal(same.x_embedder.weight, dit.x_embedder.weight)
    (torch.bfloat16, True)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors.torch import save_file

from dinosae._version import __version__
from dinosae.io.atomic import write_folder
from dinosae.models.card import model_card
from dinosae.models.folder import CONFIG, WEIGHTS, PretrainedError, folder_contents, read_folder
from dinosae.models.record import ModelRecord, named

M = TypeVar("M", bound="PretrainedMixin")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hub repo id, ``owner/name``.

    Example:
        >>> looks_like_repo_id("wkdgnsgo/dino-sae"), looks_like_repo_id("/abs/path"), looks_like_repo_id("a/b/c")
        (True, False, False)
    """
    return bool(_REPO_ID.match(text)) and ".." not in text


def download(repo_id: str, revision: str | None = None, **hub_options: Any) -> Path:
    """The local folder of the Hub repo ``owner/name``: its ``config.json`` and ``model.safetensors``, fetched
    into the Hugging Face cache (``hub_options``: ``cache_dir``, ``token``, ``local_files_only``, ...).

    Example:
        >>> download("someone/missing", local_files_only=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dinosae.models.folder.PretrainedError: 'someone/missing' is not a local folder, and downloading it from ...
    """
    import huggingface_hub

    options = {key: value for key, value in hub_options.items() if value is not None}
    try:
        for name in (CONFIG, WEIGHTS):
            path = huggingface_hub.hf_hub_download(repo_id, name, revision=revision, library_name="dinosae",
                                                   library_version=__version__, **options)
    except Exception as error:  # the hub's errors have no common base (HTTP, offline mode, bad id, cache I/O)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PretrainedError(f"{repo_id!r} is not a local folder, and downloading it from the Hugging Face Hub "
                              f"failed: {reason[:300]}") from error
    return Path(path).parent


def local_folder(source: str | os.PathLike) -> Path | None:
    """``source`` as a local folder; None when it names a Hub repo instead (``owner/name``, not a path here).

    Example:
        >>> local_folder("someone/a-model") is None, local_folder("/tmp")
        (True, PosixPath('/tmp'))
    """
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise PretrainedError(f"{str(source)!r} is a file, not a model folder")
        return path
    if looks_like_repo_id(str(source)):
        return None
    raise PretrainedError(f"{str(source)!r} does not exist")


class PretrainedMixin(ModelHubMixin, library_name="dinosae"):
    """Hub-style saving and loading for a model class that names its ``pretrained_kind`` and builds itself
    from a record (``from_record``).

    Example:
        >>> import tempfile, torch
        >>> from dinosae.models.dit import DiT
        >>> from dinosae.config import DiTConfig
        >>> dit = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, num_classes=3))
        >>> folder = dit.save_pretrained(tempfile.mkdtemp() + "/dit")
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
        >>> DiT.from_pretrained(folder).config == dit.config
        True
    """

    pretrained_kind: ClassVar[str]

    @classmethod
    def from_record(cls: type[M], record: ModelRecord, teacher_weights: str | os.PathLike | None = None) -> M:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | os.PathLike, *, include_vit: bool = True,
                        record: dict[str, Any] | None = None, card: str | None = None, overwrite: bool = False,
                        config: None = None, model_card_kwargs: dict[str, Any] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` (``card``, else one
        written from the model) to ``save_directory``; returns the folder.

        ``include_vit=False`` leaves an autoencoder's frozen ViT out (the folder then needs its
        teacher-weights file); ``record`` adds fields to ``config.json``
        (``dinosae.models.folder.folder_contents``). A non-empty folder is refused unless ``overwrite``,
        which replaces it whole. ``config`` is the mixin's, and must stay None: a folder's ``config.json``
        is the model's own.
        """
        if config is not None:
            raise ValueError("a dinosae folder's config.json is the model's own; pass record= to add fields")
        folder_config, tensors = folder_contents(self, include_vit, record)
        card_options = {"card": card, **(model_card_kwargs or {})}

        def write(staging: Path) -> None:
            self._folder_tensors = tensors  # for _save_pretrained, which the mixin calls with the folder alone
            try:
                ModelHubMixin.save_pretrained(self, staging, config=folder_config, model_card_kwargs=card_options)
            finally:
                del self._folder_tensors

        return write_folder(save_directory, write, overwrite)

    def _save_pretrained(self, save_directory: Path) -> None:
        save_file(self._folder_tensors, save_directory / WEIGHTS, metadata={"format": "pt"})

    def generate_model_card(self, card: str | None = None, **_: Any) -> ModelCard:
        """The folder's ``README.md``: ``card`` as given, or a card written from the model alone."""
        return ModelCard(card if card is not None else model_card(self, []))

    @classmethod
    def from_pretrained(cls: type[M], source: str | os.PathLike, *, teacher_weights: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu", revision: str | None = None, **hub_options: Any) -> M:
        """The model saved in a local folder, or in a Hugging Face Hub repo ``owner/name``, in eval mode.

        ``teacher_weights`` is the teacher file of an autoencoder whose folder leaves the ViT out (else the
        file it names), or supplies the patch embedding an official release's ViT lacks; a ViT in the
        folder is used as it is. Tensors load as they were saved, dtype included. ``revision`` is a Hub
        branch, tag or commit; ``hub_options`` go to the Hub's download (``cache_dir``, ``token``, ...).
        """
        folder = local_folder(source)
        if folder is not None:
            return cls._build(read_folder(folder), teacher_weights, device)
        try:
            return super().from_pretrained(str(source), revision=revision, teacher_weights=teacher_weights,
                                           device=device, **hub_options)
        except PretrainedError:
            raise
        except Exception as error:  # the mixin's own fetch of config.json: HTTP, offline mode, cache I/O
            reason = " ".join(str(error).split()) or type(error).__name__
            raise PretrainedError(f"{str(source)!r} is not a local folder, and downloading it from the Hugging "
                                  f"Face Hub failed: {reason[:300]}") from error

    @classmethod
    def _from_pretrained(cls: type[M], *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         teacher_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                         **_: Any) -> M:
        folder = download(model_id, revision, cache_dir=cache_dir, force_download=force_download or None,
                          local_files_only=local_files_only or None, token=token)
        return cls._build(read_folder(folder), teacher_weights, device)

    @classmethod
    def _build(cls: type[M], record: ModelRecord, teacher_weights: str | os.PathLike | None,
               device: str | torch.device) -> M:
        if record.kind != cls.pretrained_kind:
            raise PretrainedError(f"{record.source!r} holds {named(record.kind)}, not {named(cls.pretrained_kind)}")
        return cls.from_record(record, teacher_weights).to(device).eval()
