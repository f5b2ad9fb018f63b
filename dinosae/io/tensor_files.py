"""Reading tensor files, the one place that does: safetensors without their library (the header alone, to
check a file before trusting it, or every tensor mapped copy-on-write from the file rather than read into
private memory), and torch pickles loaded with ``weights_only`` (they cannot run code)."""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class TruncatedFile(ValueError):
    """A file shorter than its own header says."""


@dataclass(frozen=True)
class Header:
    """A safetensors file's layout: its tensors' entries (dtype, shape, data offsets), where their data
    starts, whether the file is as long as they say, and its string metadata."""

    tensors: dict[str, dict[str, Any]]
    data_start: int
    complete: bool
    metadata: dict[str, str] = field(default_factory=dict)


# A header larger than this is not a weights file's (ViT-7B's has about 200 KB).
MAX_HEADER_BYTES = 100 << 20


def read_header(path: str | os.PathLike) -> Header:
    """The header of the safetensors file at ``path``, checked before any of it is used: a ``ValueError`` naming
    the file and what is wrong (``TruncatedFile`` if even its header is cut short). Every tensor needs a known
    dtype, a shape of non-negative sizes and data offsets that hold exactly its bytes, and tensors may not
    overlap (``complete`` says whether the file is as long as its tensors say).

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"w": torch.ones(2, 3)}, path)
        >>> header = read_header(path)
        >>> header.tensors["w"]["shape"], header.complete
        ([2, 3], True)
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 8:
            raise ValueError(f"{str(path)!r} is too short to be a safetensors file")
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > size - 8:
            raise TruncatedFile(f"{str(path)!r} is truncated (its header claims {header_size} bytes)")
        if header_size > MAX_HEADER_BYTES:
            raise ValueError(f"{str(path)!r} has a header of {header_size} bytes: not a weights file's")
        try:
            entries = json.loads(handle.read(header_size))
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{str(path)!r} has no readable safetensors header ({type(error).__name__})") from error
    if not isinstance(entries, dict):
        raise ValueError(f"{str(path)!r} has no safetensors header")
    tensors = {name: info for name, info in entries.items() if name != "__metadata__"}
    spans = sorted((_checked_span(path, name, info), name) for name, info in tensors.items())
    for ((_, end), name), ((begin, _), after) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"{str(path)!r}: tensors {name!r} and {after!r} overlap")
    end = spans[-1][0][1] if spans else 0
    metadata = entries.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{str(path)!r} has metadata that is not a mapping of strings")
    return Header(tensors, 8 + header_size, 8 + header_size + end == size, metadata)


def _checked_span(path: str | os.PathLike, name: str, info: Any) -> tuple[int, int]:
    """The data offsets of one header entry, once its dtype, shape and offsets are seen to agree."""
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
        dtype = info.get("dtype") if isinstance(info, dict) else None
        raise ValueError(f"{str(path)!r}: tensor {name!r} has no known dtype ({dtype!r})")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"{str(path)!r}: tensor {name!r} has no valid shape ({str(shape)[:60]})")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{str(path)!r}: tensor {name!r} has no valid data offsets ({str(offsets)[:60]})")
    if offsets[1] - offsets[0] != math.prod(shape) * _DTYPES[info["dtype"]].itemsize:
        raise ValueError(f"{str(path)!r}: tensor {name!r} of shape {shape} does not fill its "
                         f"{offsets[1] - offsets[0]} bytes")
    return offsets[0], offsets[1]


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, mapped copy-on-write from it rather than read.

    Example:
        >>> import tempfile
        >>> from safetensors.torch import save_file
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"w": torch.arange(4.0)}, path)
        >>> read_safetensors(path)["w"]
        tensor([0., 1., 2., 3.])
    """
    header = read_header(path)
    if not header.complete:
        raise TruncatedFile(f"{str(path)!r} is truncated")
    with open(path, "rb") as handle:
        has_data = os.fstat(handle.fileno()).st_size > header.data_start
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if has_data else b""
    tensors = {}
    for name, info in header.tensors.items():
        begin, end = info["data_offsets"]
        dtype, shape = _DTYPES[info["dtype"]], info["shape"]
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-writable buffer": ACCESS_COPY is writable
            flat = torch.frombuffer(mapped, dtype=dtype, offset=header.data_start + begin,
                                    count=(end - begin) // dtype.itemsize)
        tensors[name] = flat.view(shape)
    return tensors


def read_weights(path: str | os.PathLike, what: str = "weights file") -> Any:
    """The object stored in a weights file: usually a dict of tensors, possibly wrapped (``{"model": ...}``).

    ``.safetensors`` files are mapped (:func:`read_safetensors`); anything else is a torch pickle loaded
    with ``weights_only=True``, so a file cannot run code. A missing file is a ``FileNotFoundError``, an
    unreadable one a ``ValueError``, each naming the file as ``what``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(2)}, path)
        >>> read_weights(path)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load's refusals and a corrupt zip have no common base
        raise ValueError(f"cannot read {what} {str(path)!r}: {' '.join(str(error).split())[:300]}") from error
