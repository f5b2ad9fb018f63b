"""Tar shards: an image folder as a few large ``.tar`` files in WebDataset's layout, for shared filesystems.

``dinosae data shard`` writes ``shard-00000.tar, ...``, each holding
``<key>.jpg`` (the file's bytes as they were, under its own extension) and
``<key>.cls`` (the label as decimal text) per image, in the folder's listing
order, so the ``webdataset`` package reads them too. Beside them,
``shards.json`` (classes, shards and their counts) and ``members.npz`` (each
image's shard, byte offset and size, label and original relative path).

Reading needs no ``open`` or ``stat`` per image, which on NFS or Lustre is a
round trip to a metadata server: each worker opens every shard once and reads
an image with one positioned read (``os.pread``) at its offset. Items keep
their indices, so the batch order, flips and crops, and exact resume are those
of the image folder (reads are positioned, not sequential streams).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from dinosae.data.listing import DataError, FolderListing, check_records, list_folder

SHARDS_INDEX = "shards.json"
MEMBERS = "members.npz"
FORMAT = "dinosae-tar-shards"


def is_tar_shards(root: str | os.PathLike) -> bool:
    return (Path(root) / SHARDS_INDEX).is_file()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


def write_tar_shards(data_dir: str | os.PathLike, out: str | os.PathLike, shard_size: int = 1000) -> Path:
    """Write the images of ``data_dir`` into tar shards of ``shard_size`` images in ``out``; returns ``out``.

    Each shard is written under a temporary name and renamed when complete;
    ``shards.json`` is written last.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("a/1.png", "a/2.jpg", "b/3.png"):
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     PIL.Image.new("RGB", (8, 8)).save(root / name)
        >>> shards = TarListing(write_tar_shards(root, Path(tempfile.mkdtemp()) / "shards", shard_size=2))
        >>> len(shards), shards.classes, shards.labels.tolist(), shards.relative_path(1)
        (3, ['a', 'b'], [0, 0, 1], 'a/2.jpg')
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    listing = list_folder(data_dir)
    out = Path(out)
    if is_tar_shards(out) or (out.is_dir() and any(out.iterdir())):
        raise DataError(f"{str(out)!r} is not empty; choose a new folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    shard_of, offsets, sizes, counts = [], [], [], []
    for shard, start in enumerate(range(0, len(listing), shard_size)):
        indices = range(start, min(start + shard_size, len(listing)))
        positions = _write_shard(out / shard_name(shard), listing, indices)
        shard_of += [shard] * len(indices)
        offsets += [position for position, _ in positions]
        sizes += [size for _, size in positions]
        counts.append(len(indices))
    np.savez(out / MEMBERS, shard=np.asarray(shard_of, dtype=np.int32), offset=np.asarray(offsets, dtype=np.int64),
             size=np.asarray(sizes, dtype=np.int64), labels=listing.labels,
             names=np.frombuffer(listing.names, dtype=np.uint8), name_offsets=listing.offsets)
    header = {"format": FORMAT, "version": 1, "classes": listing.classes, "count": len(listing),
              "shards": [{"name": shard_name(i), "count": count} for i, count in enumerate(counts)]}
    temporary = out / f".tmp.{SHARDS_INDEX}"
    temporary.write_text(json.dumps(header, indent=1))
    os.replace(temporary, out / SHARDS_INDEX)
    return out


def _write_shard(path: Path, listing: FolderListing, indices: range) -> list[tuple[int, int]]:
    """Write one shard; returns each image's (data offset, size) in it."""
    temporary = path.with_name(f".tmp.{path.name}")
    with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            extension = os.path.splitext(listing.relative_path(index))[1].lower()
            key = f"{index:09d}"
            _add(tar, key + (".jpg" if extension == ".jpeg" else extension), listing.read(index))
            _add(tar, f"{key}.cls", str(int(listing.labels[index])).encode())
    with tarfile.open(temporary, "r") as tar:
        positions = [(member.offset_data, member.size) for member in tar if not member.name.endswith(".cls")]
    os.replace(temporary, path)
    return positions


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class TarListing:
    """Tar shards read as a listing (``dinosae.data.listing.FolderListing``'s interface): labels,
    classes, the images' original relative paths, and their bytes by positioned reads.

    ``path`` names an image as ``SHARD.tar:RELATIVE_PATH`` (for reports of unreadable images).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        header, members = _read_index(self.root)
        self.classes: list[str] = header["classes"]
        self._shards: list[str] = [shard["name"] for shard in header["shards"]]
        self._members = members
        self.labels: np.ndarray = members["labels"]
        self._handles: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def relative_path(self, index: int) -> str:
        offsets = self._members["name_offsets"]
        return os.fsdecode(self._members["names"][offsets[index]:offsets[index + 1]].tobytes())

    def path(self, index: int) -> str:
        shard = self._shards[int(self._members["shard"][index])]
        return f"{self.root / shard}:{self.relative_path(index)}"

    def read(self, index: int) -> bytes:
        """The image's bytes: one positioned read in its shard (opened once per process)."""
        shard = int(self._members["shard"][index])
        key = (os.getpid(), shard)  # a descriptor opened before a fork stays with the parent's bookkeeping
        if key not in self._handles:
            self._handles[key] = os.open(self.root / self._shards[shard], os.O_RDONLY)
        return os.pread(self._handles[key], int(self._members["size"][index]), int(self._members["offset"][index]))

    def __getstate__(self) -> dict:
        # Open descriptors do not cross into DataLoader workers; each worker opens its own.
        return {**self.__dict__, "_handles": {}}


# What members.npz holds: an integer vector per record (names: the joined name bytes, name_offsets one more).
_MEMBER_ARRAYS = ("shard", "offset", "size", "labels", "names", "name_offsets")


def _read_index(root: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``shards.json`` and ``members.npz`` of ``root``, checked against each other and against the shard files
    before anything trusts them: a ``DataError`` naming the file and what is wrong."""
    index, members_path = root / SHARDS_INDEX, root / MEMBERS
    try:
        header = json.loads(index.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise DataError(f"{str(index)!r} is unreadable ({type(error).__name__}); write the shards again with "
                        "`dinosae data shard`") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{str(index)!r} is not a dinosae tar shards index; write them with `dinosae data shard`")
    classes, shards = header.get("classes"), header.get("shards")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{str(index)!r}: \"classes\" must be a list of names")
    if not isinstance(shards, list) or not shards or not all(
            isinstance(x, dict) and isinstance(x.get("name"), str) and type(x.get("count")) is int for x in shards):
        raise DataError(f"{str(index)!r}: \"shards\" must be a list of {{\"name\": ..., \"count\": ...}}")
    for shard in shards:
        name = shard["name"]
        if Path(name).name != name or name in ("", ".", ".."):
            raise DataError(f"{str(index)!r}: shard {name[:80]!r} is not a file of the shards' folder")
        if not (root / name).is_file():
            raise DataError(f"tar shards in {str(root)!r} lack {name}")
    try:
        with np.load(members_path, allow_pickle=False) as arrays:
            members = {name: arrays[name] for name in _MEMBER_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{str(members_path)!r} is unreadable or incomplete ({' '.join(str(error).split())[:200]})"
                        ) from error
    names = members["names"]
    if names.dtype != np.uint8 or names.ndim != 1:
        raise DataError(f"{str(members_path)!r}: its names are not bytes")
    check_records(str(members_path), names.tobytes(), members["name_offsets"], members["labels"], classes)
    count = len(members["labels"])
    for name in ("shard", "offset", "size"):
        array = members[name]
        if array.dtype.kind not in "iu" or array.shape != (count,) or (count and int(array.min()) < 0):
            raise DataError(f"{str(members_path)!r}: {name} must hold one non-negative integer per image")
    if count and int(members["shard"].max()) >= len(shards):
        raise DataError(f"{str(members_path)!r}: an image in shard {int(members['shard'].max())}, of {len(shards)}")
    if sum(shard["count"] for shard in shards) != count:
        raise DataError(f"{str(index)!r} counts {sum(s['count'] for s in shards)} images, {MEMBERS} {count}")
    sizes = np.array([(root / shard["name"]).stat().st_size for shard in shards], dtype=np.int64)
    ends = members["offset"].astype(np.int64) + members["size"].astype(np.int64)
    if count and bool((ends > sizes[members["shard"]]).any()):
        raise DataError(f"{str(members_path)!r}: an image runs past the end of its shard (a shard was cut short?)")
    return header, members
