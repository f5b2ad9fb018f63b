"""Listing an image folder without a ``stat`` per file, into compact records.

A dataset root is either an ImageFolder tree (one sub-folder per class, numbered
in sorted order as torchvision's ImageFolder numbers them) or a flat folder of
images (every image gets label 0). ``os.scandir`` gives each entry's type from
the directory itself (``d_type``), so a tree of 1.28M files is listed with one
``getdents`` stream per directory rather than 1.28M ``stat`` calls, which on
NFS or Lustre are round trips to a metadata server.

Records are three arrays, not a ``Path`` per file: the relative paths joined in
one byte string, their offsets, and the labels (about 45 bytes per ImageNet
file against 460), so that a listing is cheap to copy into every worker.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class DataError(ValueError):
    """A data folder cannot be used (missing, empty, or no readable images)."""


def check_records(source: str, names: bytes, offsets: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> None:
    """Refuse records read back from a file (an index, a tar shards' member list) that no listing makes: a
    ``DataError`` naming ``source`` and what is wrong. Labels must be integers in ``[0, max(1, len(classes)))``,
    one per name; a name must be a relative path inside the root (not absolute, no ``..`` part, no NUL).

    Example:
        >>> check_records("idx", b"a.pngb.png", np.array([0, 5, 10]), np.array([0, 0]), [])
        >>> check_records("idx", b"../x.png", np.array([0, 8]), np.array([0]), [])
        Traceback (most recent call last):
        ...
        dinosae.data.listing.DataError: idx: name 0 ('../x.png') leaves the data folder
    """
    offsets, labels = np.asarray(offsets), np.asarray(labels)
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or labels.ndim != 1:
        raise DataError(f"{source}: its offsets and labels are not integer vectors")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{source}: its labels are {labels.dtype}, not integers")
    if len(offsets) != len(labels) + 1:
        raise DataError(f"{source}: {len(labels)} labels for {len(offsets) - 1} names")
    if len(offsets) and (offsets[0] != 0 or offsets[-1] != len(names) or bool((np.diff(offsets) <= 0).any())):
        raise DataError(f"{source}: its name offsets do not cut its {len(names)} name bytes into names")
    count = max(1, len(classes))
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= count):
        raise DataError(f"{source}: labels in [{int(labels.min())}, {int(labels.max())}], outside [0, {count}) "
                        f"for {len(classes)} classes")
    if b"\0" in names:
        raise DataError(f"{source}: a name holds a NUL byte")
    data = np.frombuffer(names, dtype=np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    bad = np.flatnonzero(data[starts] == ord("/")) if len(starts) else []
    for match in re.finditer(rb"\.\.", names):  # a ".." that is a whole part of its name
        at = match.start()
        name = int(np.searchsorted(ends, at, side="right"))
        if (at == starts[name] or names[at - 1:at] == b"/") and (at + 2 == ends[name] or names[at + 2:at + 3] == b"/"):
            bad = np.append(bad, name)
    if len(bad):
        index = int(np.min(bad))
        shown = os.fsdecode(names[starts[index]:ends[index]])
        raise DataError(f"{source}: name {index} ({shown[:80]!r}) leaves the data folder")


@dataclass(frozen=True)
class FolderListing:
    """The images of a folder: relative paths (one byte string and offsets), labels and class names.

    ``directories`` are the folders that were read, relative to ``root``, with
    their modification times: an index of the listing is fresh while none of
    them has changed (adding, removing or renaming a file changes its folder's
    time).

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("b/x.png", "a/y.jpg", "a/z.png"):
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     PIL.Image.new("RGB", (8, 8)).save(root / name)
        >>> listing = list_folder(root)
        >>> len(listing), listing.classes, [listing.relative_path(i) for i in range(3)], listing.labels.tolist()
        (3, ['a', 'b'], ['a/y.jpg', 'a/z.png', 'b/x.png'], [0, 0, 1])
    """

    root: Path
    names: bytes
    offsets: np.ndarray
    labels: np.ndarray
    classes: list[str]
    directories: dict[str, int]

    def __len__(self) -> int:
        return len(self.labels)

    def relative_path(self, index: int) -> str:
        return os.fsdecode(self.names[self.offsets[index]:self.offsets[index + 1]])

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.relative_path(index))

    def read(self, index: int) -> bytes:
        """The image file's bytes."""
        with open(self.path(index), "rb") as file:
            return file.read()

    def record_bytes(self) -> int:
        """The memory its records take: paths, offsets and labels."""
        return len(self.names) + self.offsets.nbytes + self.labels.nbytes


def list_folder(root: str | os.PathLike) -> FolderListing:
    """Every image under ``root``, labelled by class sub-folder (or all 0 in a flat folder).

    Images directly in ``root`` and class sub-folders together are an error,
    since labels would be ambiguous. Within a class, files are in the order of
    their path's parts (a folder's entries sorted by name, sub-folders in place).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist or is not a directory")
    directories: dict[str, int] = {}
    seen = {_identity(root)}
    top_files, top_dirs = _entries(root, "", directories)
    nested = {}
    for name in top_dirs:
        files: list[bytes] = []
        _walk(root, name, files, directories, seen)
        if files:
            nested[name] = files
    if top_files and nested:
        raise DataError(f"data folder {str(root)!r} mixes images and class sub-folders; use one layout")
    if nested:
        classes = list(nested)
        groups = [nested[name] for name in classes]
    elif top_files:
        classes, groups = [], [[os.fsencode(name) for name in top_files]]
    else:
        raise DataError(f"data folder {str(root)!r} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    names = [name for group in groups for name in group]
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(name) for name in names], out=offsets[1:])
    labels = np.repeat(np.arange(len(groups), dtype=np.int32), [len(group) for group in groups])
    return FolderListing(root, b"".join(names), offsets, labels, classes, directories)


def _identity(folder: str | os.PathLike) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino


def _entries(root: Path, relative: str, directories: dict[str, int]) -> tuple[list[str], list[str]]:
    """The image files and sub-folders of one folder, each sorted by name; records the folder's time, taken
    before it is read, so that a file added meanwhile makes the record stale rather than missed for good.
    An entry that cannot be followed (a dangling or looping symlink) is left out with a warning."""
    folder = os.path.join(root, relative) if relative else str(root)
    directories[relative] = os.stat(folder).st_mtime_ns
    files, folders = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                    files.append(entry.name)
            except OSError as error:
                warnings.warn(f"skipping {os.path.join(folder, entry.name)!r}: {error.strerror}", stacklevel=3)
    return sorted(files), sorted(folders)


def _walk(root: Path, relative: str, out: list[bytes], directories: dict[str, int],
          seen: set[tuple[int, int]]) -> None:
    """Append the images under ``root/relative`` in the order of their path's parts; a folder reached a second
    time (a symlink to a folder above it) is skipped with a warning."""
    try:
        identity = _identity(os.path.join(root, relative))
    except OSError as error:
        warnings.warn(f"skipping {os.path.join(root, relative)!r}: {error.strerror}", stacklevel=2)
        return
    if identity in seen:
        warnings.warn(f"skipping {os.path.join(root, relative)!r}: a folder already listed (a symlink loop?)",
                      stacklevel=2)
        return
    seen.add(identity)
    files, folders = _entries(root, relative, directories)
    children = sorted([(name, False) for name in files] + [(name, True) for name in folders])
    for name, is_folder in children:
        path = f"{relative}/{name}"
        if is_folder:
            _walk(root, path, out, directories, seen)
        else:
            out.append(os.fsencode(path))
