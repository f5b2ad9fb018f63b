"""The latent cache: an image folder encoded once, so that DiT training never runs the autoencoder.

Layout of a cache directory::

    LATENTS/shard_00000.safetensors   latents (n, N, D) bfloat16, labels (n,) int64,
                                      and latents_flip (n, N, D) when flips were encoded
    LATENTS/meta.json                 format version, shapes, shard list, classes, the autoencoder used

Shard ``i`` encodes dataset items ``[i * shard_size, (i + 1) * shard_size)``
(minus unreadable images, so ``meta.json`` records each shard's count); each
is written to a temporary name and renamed when complete, so an interrupted
``dinosae encode`` resumes at the first missing shard. ``meta.json`` is written
last: a cache without it is incomplete.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import sphere_ops
from dinosae.io.atomic import write_atomic, write_json
from dinosae.io.tensor_files import TruncatedFile, read_header

META = "meta.json"
# The layout above; a cache of a newer one is refused (one written before the field existed is version 1).
FORMAT_VERSION = 1


class LatentCacheError(ValueError):
    """A latent cache is missing, incomplete, or does not fit the model asked to read it."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def write_shard(directory: Path, index: int, latents: torch.Tensor, labels: torch.Tensor,
                latents_flip: torch.Tensor | None = None) -> Path:
    """Write one shard atomically (bf16 latents, int64 labels)."""
    tensors = {"latents": latents.to(torch.bfloat16).contiguous().cpu(),
               "labels": labels.to(torch.int64).contiguous().cpu()}
    if latents_flip is not None:
        tensors["latents_flip"] = latents_flip.to(torch.bfloat16).contiguous().cpu()
    return write_atomic(directory / shard_name(index), lambda tmp: save_file(tensors, tmp))


def write_meta(directory: Path, meta: dict) -> None:
    """Write the cache's ``meta.json`` (its format version added): the cache is finished once it is there."""
    write_json(directory / META, {"format_version": FORMAT_VERSION, **meta})


def shard_problem(path: Path, tokens: int, dim: int, flip: bool) -> str | None:
    """Why the shard at ``path`` cannot be trusted (None when it can): unreadable, truncated, or of
    other shapes. Reads the header and file size only, not the latents.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> path = write_shard(root, 0, sphere_ops.random_uniform((3, 4), 8), torch.arange(3))
        >>> shard_problem(path, 4, 8, flip=False) is None, shard_problem(path, 4, 8, flip=True)
        (True, 'it lacks latents_flip')
        >>> _ = path.write_bytes(path.read_bytes()[:-5])
        >>> shard_problem(path, 4, 8, flip=False)
        'it is truncated'
    """
    try:
        header = read_header(path)
    except TruncatedFile:
        return "it is truncated"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"it is unreadable ({error})"
    if not header.complete:
        return "it is truncated"
    tensors = header.tensors
    names = ["latents", "labels"] + (["latents_flip"] if flip else [])
    missing = [name for name in names if name not in tensors]
    if missing:
        return f"it lacks {', '.join(missing)}"
    rows = tensors["labels"]["shape"][0]
    for name in names[:1] + names[2:]:
        if tensors[name]["shape"] != [rows, tokens, dim]:
            return f"its {name} have shape {tensors[name]['shape']}, not [{rows}, {tokens}, {dim}]"
    return None


class LatentCache(torch.utils.data.Dataset):
    """A finished latent cache, indexed by ``(index, flip)`` like ``dinosae.data.images.ImageDataset``.

    Items are float32 latents (N, D), renormalized onto the spheres (bf16
    storage moves them off by ~1e-3), and their labels; ``stored`` gives
    them as stored (what training loaders read, see ``StoredLatents``).
    Shards are opened lazily and read by slices, so a cache larger than
    memory works.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> z = sphere_ops.random_uniform((6, 4), 8)
        >>> _ = write_shard(root, 0, z, torch.arange(6) % 2)
        >>> write_meta(root, {"num": 6, "tokens": 4, "dim": 8, "shard_counts": [6], "num_shards": 1,
        ...                   "flip": False, "classes": ["a", "b"]})
        >>> cache = LatentCache(root)
        >>> latent, label = cache[(3, False)]
        >>> latent.shape, label
        (torch.Size([4, 8]), 1)
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.is_file():
            raise LatentCacheError(f"{str(self.directory)!r} is not a finished latent cache (no {META}); "
                                   "run or resume `dinosae encode`")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.num, self.tokens, self.dim = self.meta["num"], self.meta["tokens"], self.meta["dim"]
            self.offsets = list(itertools.accumulate(self.meta["shard_counts"], initial=0))
            self.has_flip = bool(self.meta["flip"])
            self.classes = list(self.meta.get("classes", []))
        except (ValueError, KeyError, TypeError) as error:
            raise LatentCacheError(f"{str(meta_path)!r} is not a latent cache's meta.json: {error!r}") from error
        version = self.meta.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise LatentCacheError(f"{str(self.directory)!r} is a latent cache of format version {version!r}; this "
                                   f"dinosae reads up to {FORMAT_VERSION} (a newer dinosae wrote it)")
        missing = [shard_name(i) for i in range(self.meta["num_shards"])
                   if not (self.directory / shard_name(i)).is_file()]
        if missing:
            raise LatentCacheError(f"latent cache {str(self.directory)!r} lacks {missing[:3]}")
        for index in range(self.meta["num_shards"]):
            problem = shard_problem(self.directory / shard_name(index), self.tokens, self.dim, self.has_flip)
            if problem is not None:
                raise LatentCacheError(f"latent cache {str(self.directory)!r}: {shard_name(index)} cannot be used "
                                       f"({problem}); rerun `dinosae encode` with the same settings to redo it")
        self._handles: dict[int, object] = {}

    @property
    def num_classes(self) -> int:
        return max(1, len(self.classes))

    def identity(self) -> dict[str, object]:
        """What the cache holds, to recognise it again: its path, latent count and a hash of its
        ``meta.json`` (the same wherever the cache is copied)."""
        digest = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:16]
        return {"path": str(self.directory.resolve()), "count": self.num, "listing": digest}

    def __len__(self) -> int:
        return self.num

    def _shard(self, index: int):
        if index not in self._handles:
            self._handles[index] = safe_open(str(self.directory / shard_name(index)), framework="pt")
        return self._handles[index]

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        latent, label = self.stored(key)
        return sphere_ops.normalize(latent.float()), label

    def stored(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        """The latent (N, D) as stored, bfloat16 and off the spheres by its rounding, and its label."""
        index, flip = key
        if not 0 <= index < self.num:
            raise IndexError(f"latent index {index} out of range [0, {self.num})")
        shard = bisect.bisect_right(self.offsets, index) - 1
        row = index - self.offsets[shard]
        handle = self._shard(shard)
        name = "latents_flip" if flip and self.has_flip else "latents"
        latent = handle.get_slice(name)[row:row + 1][0]
        label = int(handle.get_slice("labels")[row:row + 1][0])
        return latent, label

    def __getstate__(self) -> dict:
        # Open file handles do not cross into DataLoader workers; each worker reopens.
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


class StoredLatents(torch.utils.data.Dataset):
    """A cache's items as stored (``LatentCache.stored``), for training loaders: bfloat16 crosses the
    workers' shared memory and the copy to the device at half of float32's bytes, and the device
    renormalizes (``sphere_ops.normalize``) in a fraction of the time a worker takes.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = write_shard(root, 0, sphere_ops.random_uniform((6, 4), 8), torch.arange(6) % 2)
        >>> write_meta(root, {"num": 6, "tokens": 4, "dim": 8, "shard_counts": [6], "num_shards": 1,
        ...                   "flip": False, "classes": ["a", "b"]})
        >>> latents, labels = collate_latents([StoredLatents(LatentCache(root))[(i, False)] for i in range(2)])
        >>> latents.dtype, latents.shape, labels.tolist()
        (torch.bfloat16, torch.Size([2, 4, 8]), [0, 1])
    """

    def __init__(self, cache: LatentCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        return self.cache.stored(key)


def collate_latents(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    latents = torch.stack([latent for latent, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return latents, labels


def check_cache_fits(cache: LatentCache, tokens: int, dim: int) -> None:
    """A clear error when a cache's latent shape differs from what a model expects."""
    if (cache.tokens, cache.dim) != (tokens, dim):
        raise LatentCacheError(f"latent cache holds ({cache.tokens}, {cache.dim}) latents, the model "
                               f"expects ({tokens}, {dim})")


def warn_if_unflipped(cache: LatentCache, flip: bool) -> None:
    if flip and not cache.has_flip:
        warnings.warn("the latent cache has no flipped copies; training without flip augmentation",
                      stacklevel=2)
