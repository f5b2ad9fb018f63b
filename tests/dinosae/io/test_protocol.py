"""What a folder was written with: the one comparison before writing into it again."""

from __future__ import annotations

import json

import pytest

from dinosae.io.protocol import PROTOCOL, ProtocolMismatchError, claim, differences, read_protocol


def test_differences_name_each_changed_setting_with_both_values():
    assert differences({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1, "b": [1, 3], "c": "x"}) == ["b: [1, 2] -> [1, 3]"]
    assert differences({"a": 1}, {"a": 1, "new": 2}) == ["new: None -> 2"]
    assert differences({"path": "/a", "n": 1}, {"path": "/b", "n": 1}, ignore=["path"]) == []


def test_a_claim_records_then_accepts_the_same_and_refuses_another(tmp_path):
    claim(tmp_path, {"seed": 0, "steps": 5}, "samples", "choose another --out")
    assert json.loads((tmp_path / PROTOCOL).read_text()) == {"seed": 0, "steps": 5}
    claim(tmp_path, {"seed": 0, "steps": 5}, "samples", "choose another --out")
    with pytest.raises(ProtocolMismatchError) as error:
        claim(tmp_path, {"seed": 1, "steps": 5}, "samples", "choose another --out")
    message = str(error.value)
    assert "holds samples made with other settings (seed: 0 -> 1); choose another --out" in message
    assert json.loads((tmp_path / PROTOCOL).read_text())["seed"] == 0  # the folder's record is left as it was


def test_defaults_stand_for_fields_a_record_predates(tmp_path):
    (tmp_path / PROTOCOL).write_text(json.dumps({"seed": 0}))
    claim(tmp_path, {"seed": 0, "format_version": 1}, "latents", "hint", defaults={"format_version": 1})
    with pytest.raises(ProtocolMismatchError, match="format_version: 1 -> 2"):
        claim(tmp_path, {"seed": 0, "format_version": 2}, "latents", "hint", defaults={"format_version": 1})


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\"a string\"", "[" * 100_000])
def test_a_protocol_that_is_not_one_is_a_one_line_error(tmp_path, text):
    (tmp_path / PROTOCOL).write_text(text)
    with pytest.raises(ProtocolMismatchError) as error:
        read_protocol(tmp_path / PROTOCOL)
    assert "\n" not in str(error.value) and "delete it" in str(error.value)
    assert read_protocol(tmp_path / "missing.json") is None
