"""`dinosae sample --guide-dit RUN@STEP --guidance W`: the guide is loaded like any DiT, checked against the main
one, recorded in samples.json, and refused in one line when it cannot guide."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dinosae
from dinosae.cli import main
from dinosae.config import DiTTrainConfig, to_dict
from dinosae.io.checkpoint import Checkpoint, CheckpointError, resolve_checkpoint, save_checkpoint
from dinosae.models.loading import load_model
from dinosae.pipelines.sample import SampleProtocol, check_guide

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(models, out, *extra):
    return ["sample", "--ae", str(models / "ae"), "--dit", str(models / "dit"), "--out", str(out), "--num-samples",
            "4", "--steps", "3", "--batch-size", "2", "--device", "cpu", "--no-png", *extra]


def _guide(tmp_path, step: int, **changes):
    """A run whose checkpoint of ``step`` is a DiT like the fixture's, with ``changes`` to its config."""
    base = dinosae.create_model("dit-tiny", in_dim=192, grid_size=4, num_classes=3, hidden_size=32, depth=1,
                                num_heads=2)
    dit = dinosae.models.dit.DiT(replace(base.config, **changes))
    generator = torch.Generator().manual_seed(7)
    weights = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in dit.state_dict().items()}
    run = tmp_path / "guide"
    save_checkpoint(run, Checkpoint(step=step, model=weights, meta={
        "kind": "dit", "dit_config": to_dict(dit.config), "train_config": to_dict(DiTTrainConfig())}), keep_last=4)
    return run


def test_a_guide_of_the_same_run_at_a_step_is_recorded_and_itself_changes_nothing(models, tmp_path):
    plain = CliRunner().invoke(main, _args(models, tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    guided = CliRunner().invoke(main, _args(models, tmp_path / "self", "--guide-dit", f"{models / 'dit'}@1",
                                            "--guidance", "2.5"))
    assert guided.exit_code == 0, guided.output
    with np.load(tmp_path / "plain" / "samples.npz") as a, np.load(tmp_path / "self" / "samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])  # v_guide + W (v_main - v_guide) with v_guide = v_main
    record = json.loads((tmp_path / "self" / "samples.json").read_text())
    assert record["guide_dit"] == f"{models / 'dit'}@1" and record["guidance"] == 2.5
    assert record["guide"]["step"] == 1 and record["guide"]["evaluations"] == 3
    assert record["guide"]["path"].endswith("step_00000001")


def test_another_guide_changes_the_samples(models, tmp_path):
    guide = _guide(tmp_path, 5)
    result = CliRunner().invoke(main, _args(models, tmp_path / "guided", "--guide-dit", f"{guide}@5",
                                            "--guidance", "1.5", "--guidance-interval", "0.0,0.5"))
    assert result.exit_code == 0, result.output
    CliRunner().invoke(main, _args(models, tmp_path / "plain"))
    with np.load(tmp_path / "plain" / "samples.npz") as a, np.load(tmp_path / "guided" / "samples.npz") as b:
        assert not np.array_equal(a["arr_0"], b["arr_0"])
    assert json.loads((tmp_path / "guided" / "samples.json").read_text())["guide"]["evaluations"] == 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"manifold": "euclidean"}, "the guide DiT has manifold 'euclidean', the main DiT 'sphere'"),
    ({"prediction": "x1"}, "the guide DiT has prediction 'x1', the main DiT 'velocity'"),
    ({"num_classes": 5}, "the guide DiT has 5 classes, the main DiT 3"),
    ({"in_dim": 96}, "the guide DiT has token size 96, the main DiT 192"),
])
def test_a_guide_of_another_task_is_refused_in_one_line(models, tmp_path, changes, message):
    guide = _guide(tmp_path, 2, **changes)
    result = CliRunner().invoke(main, _args(models, tmp_path / "out", "--guide-dit", str(guide), "--guidance", "2"))
    assert result.exit_code != 0 and message in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="AutoGuidance needs a guide of the same task"):
        check_guide(load_model(models / "dit", kind="dit"), load_model(guide, kind="dit"))


def test_a_different_token_count_is_refused(models, tmp_path):
    main_dit = load_model(models / "dit", kind="dit")
    other = dinosae.create_model("dit-tiny", in_dim=192, grid_size=2, num_classes=3, hidden_size=32, depth=1,
                                 num_heads=2)
    with pytest.raises(ValueError, match="the guide DiT has 4 tokens, the main DiT 16"):
        check_guide(main_dit, other)


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf"])
def test_a_non_finite_weight_is_refused_in_one_line(models, tmp_path, weight):
    result = CliRunner().invoke(main, _args(models, tmp_path / "out", "--guide-dit", str(models / "dit"),
                                            "--guidance", weight))
    assert result.exit_code != 0 and "guidance scales must be finite" in result.output
    assert not (tmp_path / "out").exists()


def test_guidance_without_a_guide_and_a_guide_without_guidance_are_refused():
    for fields in ({"guidance": 2.0}, {"guide_dit": "run"}):
        with pytest.raises(ValueError, match="AutoGuidance needs both --guide-dit and a --guidance weight"):
            SampleProtocol(ae="ae", dit="dit", num=1, **fields)


def test_a_step_that_was_not_kept_names_the_kept_ones(tmp_path):
    run = _guide(tmp_path, 8)
    assert resolve_checkpoint(f"{run}@8").name == "step_00000008"
    with pytest.raises(CheckpointError, match=r"has no checkpoint of step 3; it keeps steps \[8\]"):
        resolve_checkpoint(f"{run}@3")
