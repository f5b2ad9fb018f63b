"""`dinosae distill`: couplings from the teacher's ODE, exp-map targets that land on them, a student that is a DiT
run like any other (resumed exactly, exported, sampled with its own NFE)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from dinosae.cli import main
from dinosae.config import DistillConfig
from dinosae.config.base import ConfigError
from dinosae.flow import Sphere
from dinosae.io.checkpoint import CheckpointError, load_checkpoint
from dinosae.models.loading import load_model, read_model
from dinosae.train.distill import distill, student_grid, teacher_couplings, teacher_grid

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(couplings=24, teacher_steps=4, batch_size=8, lr=1e-3, log_every=1)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 4]), st.floats(0.5, 4.0))
def test_the_target_velocitys_exp_map_step_lands_on_the_next_state(seed, nfe, shift):
    sphere = Sphere(1.0)
    generator = torch.Generator().manual_seed(seed)
    x = sphere.prior((3, 2, 6), generator=generator, dtype=torch.float64)
    after = sphere.prior((3, 2, 6), generator=generator, dtype=torch.float64)
    grid = student_grid(nfe, shift)
    h = grid[1] - grid[0]
    target = sphere.logmap(x, after) / h
    torch.testing.assert_close(sphere.step(x, h * target), after, rtol=0, atol=1e-10)
    assert set(grid) <= set(teacher_grid(grid, 16))


def test_couplings_are_the_teachers_states_on_the_spheres(models):
    teacher = load_model(models / "dit", kind="dit").eval()
    config = DistillConfig(nfe=2, teacher_steps=4)
    states, labels = teacher_couplings(teacher, range(3, 6), config, [0.0, 0.5, 1.0], torch.device("cpu"))
    torch.testing.assert_close(states.norm(dim=-1), torch.ones(3, 3, 16), rtol=0, atol=1e-5)
    again, _ = teacher_couplings(teacher, range(4, 6), config, [0.0, 0.5, 1.0], torch.device("cpu"))
    assert torch.equal(states[1:], again)  # coupling i depends on (seed, i) alone
    assert labels.dtype == torch.long and int(labels.max()) < 3


def test_a_student_is_a_dit_run_sampled_with_its_own_nfe(models, tmp_path):
    student = tmp_path / "student"
    distill(student, models / "dit", DistillConfig(nfe=2, steps=3, **SMALL), device="cpu")
    meta = read_model(student, kind="dit").meta
    assert meta["distilled"]["nfe"] == 2 and meta["distilled"]["grid"][0] == 0.0
    assert sorted(p.name for p in (student / "couplings").iterdir()) == ["shard_00000.safetensors"]
    out = tmp_path / "samples"
    result = CliRunner().invoke(main, ["sample", "--ae", str(models / "ae"), "--dit", str(student), "--out", str(out),
                                       "--num-samples", "2", "--batch-size", "2", "--device", "cpu", "--no-png"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "samples.json").read_text())
    assert (record["steps"], record["method"], record["nfe"], record["sampler_source"]) == (2, "euler", 2, "distilled")
    folder = tmp_path / "exported"
    assert CliRunner().invoke(main, ["export", str(student), str(folder)]).exit_code == 0
    assert read_model(folder, kind="dit").meta["distilled"]["nfe"] == 2


def test_a_resumed_distillation_is_exact(models, tmp_path):
    config = DistillConfig(nfe=1, steps=4, ckpt_every=2, **SMALL)
    distill(tmp_path / "a", models / "dit", config, device="cpu")
    distill(tmp_path / "b", models / "dit", DistillConfig(nfe=1, steps=2, ckpt_every=2, **SMALL), device="cpu")
    distill(tmp_path / "b", None, config, resume="latest", device="cpu")
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.step == b.step == 4 and all(torch.equal(v, b.model[k]) for k, v in a.model.items())
    assert all(torch.equal(v, b.ema[k]) for k, v in a.ema.items())


def test_other_settings_on_resume_and_other_nfes_are_refused(models, tmp_path):
    distill(tmp_path / "run", models / "dit", DistillConfig(nfe=1, steps=1, **SMALL), device="cpu")
    with pytest.raises(CheckpointError, match=r"distilled with other settings: \['nfe'\]"):
        distill(tmp_path / "run", None, DistillConfig(nfe=2, steps=2, **SMALL), resume="latest", device="cpu")
    with pytest.raises(ConfigError, match="nfe must be one of"):
        DistillConfig(nfe=3)
    result = CliRunner().invoke(main, ["distill", "--out", str(tmp_path / "x"), "--nfe", "1"])
    assert result.exit_code != 0 and "distill needs --dit" in result.output
