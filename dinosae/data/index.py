"""An image folder's listing, written once to an index file that every command and rank reuses.

The index of a folder lives in ``$DINOSAE_INDEX_DIR`` (default
``~/.cache/dinosae/indexes``), named by a hash of the folder's resolved path,
so that it needs no write access to the data. It records the modification time
of every folder it read; it is used while they are all unchanged, and a folder
that changed is listed again. Checking costs one ``stat`` per folder (about a
thousand for ImageNet), not one per file.

Under ``torchrun`` the main rank calls :func:`index_folder` and the others wait,
then every rank reads the index it wrote (:func:`folder_listing`): a shared
filesystem sees one listing, not one per rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from dinosae.data.listing import IMAGE_EXTENSIONS, DataError, FolderListing, check_records, list_folder
from dinosae.data.tar_shards import TarListing, is_tar_shards
from dinosae.io.atomic import shared

INDEX_VERSION = 1


def index_dir() -> Path:
    """Where indexes are kept: ``$DINOSAE_INDEX_DIR``, else ``$XDG_CACHE_HOME/dinosae/indexes`` or
    ``~/.cache/dinosae/indexes``."""
    if os.environ.get("DINOSAE_INDEX_DIR"):
        return Path(os.environ["DINOSAE_INDEX_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dinosae" / "indexes"


def index_path(root: str | os.PathLike) -> Path:
    """The index file of the folder ``root``."""
    resolved = str(Path(root).resolve())
    return index_dir() / f"{hashlib.sha256(resolved.encode()).hexdigest()[:24]}.npz"


def index_folder(root: str | os.PathLike) -> Path | None:
    """The path of a fresh index of ``root``: the existing one when no folder changed, else a new listing's.

    Returns None (with a warning) when the index cannot be written; callers then list the folder.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> PIL.Image.new("RGB", (8, 8)).save(root / "a.png")
        >>> path = index_folder(root)
        >>> len(load_listing(root, path)), index_folder(root) == path
        (1, True)
    """
    path = index_path(root)
    if read_index(root, path) is not None:
        return path
    listing = list_folder(root)
    try:
        write_index(path, listing)
    except OSError as error:
        warnings.warn(f"cannot write the index of {str(root)!r} to {str(path)!r} ({error}); every process "
                      "lists the folder itself (set DINOSAE_INDEX_DIR to a writable folder)", stacklevel=2)
        return None
    return path


def load_listing(root: str | os.PathLike, index: Path | None) -> FolderListing:
    """The listing of ``root`` from its index file when that is there and fresh, else from the folder."""
    listing = None if index is None else read_index(root, index)
    return listing if listing is not None else list_folder(root)


def folder_listing(root: str | os.PathLike, on_main: Callable[[Callable[[], Path | None]], Path | None] | None = None
                   ) -> FolderListing | TarListing:
    """The listing of ``root`` through its index, which only the main rank writes; tar shards
    (``dinosae data shard``) are their own index.

    ``on_main`` runs a function on the main rank and hands every rank its
    result (``dinosae.runtime.DistEnv.on_main``); without it,
    this process is the main rank.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> PIL.Image.new("RGB", (8, 8)).save(root / "a.png")
        >>> folder_listing(root).relative_path(0)
        'a.png'
    """
    if is_tar_shards(root):
        return TarListing(root)
    index = index_folder(root) if on_main is None else on_main(lambda: index_folder(root))
    return load_listing(root, index)


def write_index(path: Path, listing: FolderListing) -> None:
    """Write ``listing`` to ``path`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"version": INDEX_VERSION, "root": str(listing.root.resolve()), "classes": listing.classes,
              "directories": listing.directories, "extensions": IMAGE_EXTENSIONS}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".tmp.{path.name}.")
    shared(Path(temporary))  # an index directory may be shared by a group (DINOSAE_INDEX_DIR)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                     names=np.frombuffer(listing.names, dtype=np.uint8), offsets=listing.offsets,
                     labels=listing.labels)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_index(root: str | os.PathLike, path: Path) -> FolderListing | None:
    """The listing in the index file ``path`` if it is readable, of ``root``, and no folder has changed since."""
    root = Path(root)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes())
            if (header.get("version") != INDEX_VERSION or header["root"] != str(root.resolve())
                    or tuple(header["extensions"]) != IMAGE_EXTENSIONS or _changed(root, header["directories"])):
                return None
            names, offsets, labels = arrays["names"].tobytes(), arrays["offsets"], arrays["labels"]
        classes = header["classes"]
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            raise DataError(f"{str(path)}: its classes are not a list of names")
        check_records(str(path), names, offsets, labels, classes)
    except DataError as error:
        # The index is this toolkit's own cache: a bad one is listed again, never trusted.
        warnings.warn(f"listing {str(root)!r} again: its index is unusable ({error})", stacklevel=3)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, EOFError, zipfile.BadZipFile):
        return None
    return FolderListing(root, names, offsets, labels, classes, header["directories"])


def _changed(root: Path, directories: dict[str, int]) -> bool:
    for relative, mtime in directories.items():
        try:
            if os.stat(os.path.join(root, relative) if relative else root).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False
