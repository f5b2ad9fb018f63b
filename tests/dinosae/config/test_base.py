"""Config validation: every bad key, type or value is refused at its path; files are checked whole."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dinosae.config import (AE_PRESETS, DIT_PRESETS, AEConfig, AETrainConfig, ConfigError, DiTConfig, DiTTrainConfig,
                            from_dict, read_overrides, to_dict)


@pytest.mark.parametrize("cls, data, message", [
    (AETrainConfig, {"lrr": 1e-4}, "unknown key 'lrr' in train (did you mean 'lr'?)"),
    (AETrainConfig, {"lr": "fast"}, "train.lr: expected a number, got 'fast'"),
    (AETrainConfig, {"batch_size": 2.5}, "train.batch_size: expected an integer, got 2.5"),
    (AETrainConfig, {"compile": "yes"}, "train.compile: expected true or false"),
    (AETrainConfig, {"ckpt_every": 0}, "train.ckpt_every: must be at least 1, got 0"),
    (AETrainConfig, {"log_every": -1}, "train.log_every: must be at least 1"),
    (AETrainConfig, {"betas": [0.9]}, "train.betas: expected 2 values, got 1"),
    (AETrainConfig, {"betas": [0.9, "x"]}, "train.betas: item 1: expected a number"),
    (AEConfig, {"decoder": {"widthz": [1]}}, "unknown key 'widthz' in model.decoder (did you mean 'widths'?)"),
    (AEConfig, {"decoder": "big"}, "model.decoder: expected a DecoderConfig"),
    (DiTConfig, {"depth": True}, "model.depth: expected an integer, got True"),
    (DiTTrainConfig, {"shift": "inf"}, "train.shift: expected a finite number, got inf"),
])
def test_bad_fields_are_named_by_their_path(cls, data, message):
    section = "train" if cls in (AETrainConfig, DiTTrainConfig) else "model"
    with pytest.raises(ConfigError) as caught:
        from_dict(cls, data, section)
    assert message in str(caught.value)


@given(st.sampled_from(["lr", "ema_decay", "grad_clip", "noise_max", "align_weight"]),
       st.sampled_from([math.inf, -math.inf, math.nan]))
def test_no_float_field_takes_a_non_finite_value(name, value):
    with pytest.raises(ConfigError, match=f"{name}: expected a finite number"):
        AETrainConfig(**{name: value})


def test_yaml_numbers_written_as_strings_are_read_as_numbers():
    # PyYAML reads `lr: 1e-4` (no dot) as the string "1e-4".
    assert from_dict(AETrainConfig, {"lr": "1e-4", "betas": ["0.5", "0.9"]}).betas == (0.5, 0.9)


@pytest.mark.parametrize("presets", [AE_PRESETS, DIT_PRESETS])
def test_every_preset_round_trips(presets):
    for config in presets.values():
        assert from_dict(type(config), to_dict(config)) == config


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr: [1, 2\n", "is not valid YAML"),
    ("trian:\n  lr: 1\n", "unknown key 'trian' in the file (did you mean 'train'?)"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("train: 3\n", "train must be a mapping of fields"),
])
def test_config_files_are_checked_whole(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        read_overrides(path)


def test_a_json_file_with_bad_syntax_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"train": {"lr": 1e-4,}}')
    with pytest.raises(ConfigError, match="config.json' is not valid JSON"):
        read_overrides(path)


@pytest.mark.parametrize("name, text, message", [
    ("laughs.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "train:\n  lr: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", "anchors and aliases"),
    ("deep.json", '{"train": {"lr": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nests deeper than 16 levels"),
    ("deep.yaml", "train:\n  lr: " + "[" * 2_000 + "]" * 2_000 + "\n", "nests deeper than 16 levels"),
    ("huge.json", '{"train": {"lr": "' + "x" * (2 << 20) + '"}}', "larger than 1 MiB"),
])
def test_config_files_beyond_any_configs_size_are_one_line(tmp_path, name, text, message):
    import time

    path = tmp_path / name
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as error:
        read_overrides(path)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400
    assert time.perf_counter() - start < 10  # the billion laughs took 54 s and 3.2 GB before


@pytest.mark.parametrize("cls, fields, message", [
    (AEConfig, dict(vit_depth=0), r"vit_depth: must lie in \[1, 256\], got 0"),
    (AEConfig, dict(image_size=16 * 4096), r"image_size: must lie in \[16, 8192\]"),
    (DiTConfig, dict(depth=1 << 20), r"depth: must lie in \[1, 1024\]"),
    (DiTConfig, dict(num_classes=0), r"num_classes: must lie in \[1, 10000000\]"),
])
def test_sizes_beyond_any_models_are_refused(cls, fields, message):
    with pytest.raises(ConfigError, match=message):
        cls(**fields)
