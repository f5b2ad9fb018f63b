"""bf16 RFM training stays finite and matches float32 (``dinosae ablate precision``)."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from dinosae.cli import main
from dinosae.experiments.problems import vmf_problem
from dinosae.experiments.ablate_precision import compare_precisions, format_table


def test_bf16_training_is_finite_and_close_to_float32(one_thread):
    problem = vmf_problem(components=4, tokens=4, dim=16, kappa=100.0, heldout=256, seed=0)
    result = compare_precisions(problem, seeds=(0,), steps=60, eval_every=60, batch_size=64, preset="tiny",
                                lr=1e-3, sample_steps=8, device=torch.device("cpu"))
    assert result["nonfinite"] == {"fp32": 0, "bf16": 0}
    fp32 = [run["final_loss"] for run in result["runs"]["fp32"]]
    bf16 = [run["final_loss"] for run in result["runs"]["bf16"]]
    assert all(abs(a - b) <= 0.05 * a for a, b in zip(fp32, bf16)), (fp32, bf16)
    assert "| vmf | bf16 |" in format_table({"settings": {}, "vmf": result})


def test_the_command_writes_its_metrics(tmp_path, one_thread):
    out = tmp_path / "precision"
    result = CliRunner().invoke(main, ["ablate", "precision", "--out", str(out), "--steps", "4", "--seeds", "0",
                                       "--batch-size", "16", "--eval-samples", "64", "--sample-steps", "2",
                                       "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert json.loads((out / "metrics.json").read_text())["vmf"]["nonfinite"] == printed["vmf"]["nonfinite"]
    bad = CliRunner().invoke(main, ["ablate", "precision", "--seeds", "a,b"])
    assert bad.exit_code != 0 and "comma-separated integers" in bad.output
