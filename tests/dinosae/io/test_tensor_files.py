"""Tensor files read without trusting them: a safetensors header is checked before any of it is used, and
pickles load without running code."""

from __future__ import annotations

import json
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from dinosae.io.tensor_files import TruncatedFile, read_header, read_safetensors, read_weights


def _with_header(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("entry, message", [
    ({"shape": [2], "data_offsets": [0, 8]}, "has no known dtype (None)"),
    ({"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}, "has no known dtype ('F99')"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "has no valid shape"),
    ({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}, "has no valid shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "has no valid data offsets"),
    ({"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 8]}, "of shape [1099511627776] does not fill its 8 bytes"),
])
def test_a_bad_header_entry_is_one_line_naming_the_tensor(tmp_path, entry, message):
    path = tmp_path / "w.safetensors"
    _with_header(path, {"w": entry}, b"\0" * 8)
    with pytest.raises(ValueError, match="'w' " + re.escape(message)) as error:
        read_safetensors(path)
    assert "\n" not in str(error.value)


def test_overlapping_tensors_deep_headers_and_cut_files_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    _with_header(path, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12)
    with pytest.raises(ValueError, match="tensors 'a' and 'b' overlap"):
        read_safetensors(path)
    deep = "[" * 100_000
    path.write_bytes(struct.pack("<Q", len(deep)) + deep.encode())
    with pytest.raises(ValueError, match="has no readable safetensors header"):
        read_header(path)
    save_file({"w": torch.ones(4)}, path)
    path.write_bytes(path.read_bytes()[:-4])
    assert not read_header(path).complete
    with pytest.raises(TruncatedFile, match="is truncated"):
        read_safetensors(path)


def test_every_dtype_reads_back_bit_for_bit(tmp_path):
    tensors = {"f64": torch.randn(3, dtype=torch.float64), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(5), "empty": torch.zeros(0, 3)}
    save_file(tensors, tmp_path / "w.safetensors")
    back = read_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": Payload()}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="cannot read weights file"):
        read_weights(tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(tmp_path / "missing.pth")
