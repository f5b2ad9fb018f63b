"""``dinosae eval probe``, ``dinosae check magnitude`` and ``dinosae ablate align`` through click."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from dinosae.cli.evaluation import analysis_dir, check_magnitude, eval_probe
from dinosae.cli.experiments import ablate_align
from dinosae.config import AE_PRESETS, AETrainConfig, preset
from dinosae.io.checkpoint import Checkpoint, save_checkpoint
from dinosae.models.vit import RandomTeacherWarning
from dinosae.train.autoencoder import train_autoencoder

PNG = b"\x89PNG\r\n\x1a\n"
FAST_PROBE = ["--weight-decay", "0.01", "--sweep", "0.1,1", "--num-workers", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, three_photos):
    run = tmp_path_factory.mktemp("cli_run")
    config = AETrainConfig(steps=2, batch_size=4, lr=3e-4, lpips_weight=0.0, num_workers=0, log_every=1,
                           image_every=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        train_autoencoder(run, three_photos / "train", preset(AE_PRESETS, "tiny"), config, device="cpu")
    return run


def _invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def _last_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_probe_prints_json_and_writes_into_the_run(run, three_photos):
    printed = _last_json(_invoke(eval_probe, ["--ckpt", run, "--data", three_photos, "--json", *FAST_PROBE]))
    assert printed["classes"] == 3 and printed["test_images"] == 6 and printed["train_images"] == 18
    assert 0.0 <= printed["probe_latent"] <= 1.0 and 0.0 <= printed["probe_teacher"] <= 1.0
    assert printed["sweep"]["weight_decay"] == [0.01, 0.1, 1.0]
    out = run / "analysis" / "probe"
    assert json.loads((out / "metrics.json").read_text()) == printed
    assert (out / "probe.png").read_bytes()[:8] == PNG


def test_check_magnitude_prints_json_and_writes_a_plot(run, three_photos, tmp_path):
    out = tmp_path / "magnitude"
    args = ["--ckpt", run, "--data", three_photos, "--out", out, "--points", 3, "--num-workers", 0, "--json"]
    printed = _last_json(_invoke(check_magnitude, args))
    assert printed["images"] == 6  # a split root is checked on its held-out part
    assert abs(printed["psnr_change"]) < 1e-4
    assert printed["sweep"]["factor"] == pytest.approx([0.1, 1.0, 10.0])
    assert printed["spherical_path"].startswith("decode(normalize(")
    assert json.loads((out / "metrics.json").read_text()) == printed
    assert (out / "magnitude.png").read_bytes()[:8] == PNG


def test_ablate_align_prints_json(three_photos, tmp_path):
    args = ["--out", tmp_path / "ablation", "--data", three_photos, "--steps", 1, "--batch-size", 2,
            "--lpips-weight", 0, "--probe-per-class", 2, "--json"]
    printed = _last_json(_invoke(ablate_align, args))
    assert set(printed) == {"cosine", "mse", "settings"}
    assert printed["settings"]["steps"] == 1
    assert (tmp_path / "ablation" / "loss.png").read_bytes()[:8] == PNG


def test_the_default_output_belongs_to_the_run(run):
    checkpoint = next((run / "checkpoints").glob("step_*"))
    assert analysis_dir(run, "probe") == run / "analysis" / "probe"
    assert analysis_dir(checkpoint, "probe") == run / "analysis" / "probe"
    assert analysis_dir(checkpoint / "model.safetensors", "magnitude") == run / "analysis" / "magnitude"


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [eval_probe, check_magnitude])
def test_missing_checkpoint(command, three_photos, tmp_path):
    result = _invoke(command, ["--ckpt", tmp_path / "nowhere", "--data", three_photos, "--out", tmp_path / "out"])
    _one_line_error(result, "does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [eval_probe, check_magnitude])
def test_empty_folder(command, run, tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(_invoke(command, ["--ckpt", run, "--data", tmp_path / "empty", "--out", tmp_path / "out"]),
                    "contains no images")


@pytest.mark.parametrize("command", [eval_probe, check_magnitude])
def test_a_checkpoint_of_another_model(command, three_photos, tmp_path):
    save_checkpoint(tmp_path / "dit", Checkpoint(step=1, model={"w": torch.ones(2)}, meta={"kind": "dit"}))
    _one_line_error(_invoke(command, ["--ckpt", tmp_path / "dit", "--data", three_photos, "--out", tmp_path / "out"]),
                    "not an autoencoder")


def test_probe_of_an_unlabelled_folder(run, three_photos, tmp_path):
    flat = three_photos / "heldout" / "coffee"
    _one_line_error(_invoke(eval_probe, ["--ckpt", run, "--data", flat, "--out", tmp_path / "out"]),
                    "at least 2 class")


def test_ablation_without_held_out_images(three_photos, tmp_path):
    _one_line_error(_invoke(ablate_align, ["--out", tmp_path / "out", "--data", three_photos / "train"]), "held-out")


def test_bad_factor_range_is_a_usage_error(run, three_photos):
    result = _invoke(check_magnitude, ["--ckpt", run, "--data", three_photos, "--factors", "10,0.1"])
    assert result.exit_code == 2 and "0 < LO <= HI" in result.output
