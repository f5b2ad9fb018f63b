"""`dinosae ablate sampling`: one teacher trained by `train dit`, every sampler on the same noise, one JSON object
last, a plot, and entries named by what they are."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dinosae.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ablate_sampling_reports_every_sampler_as_one_json_object(tmp_path):
    out = tmp_path / "ablation"
    result = CliRunner().invoke(main, ["ablate", "sampling", "--out", str(out), "--steps", "8", "--nfe", "1,2",
                                       "--eval-samples", "64", "--students", "1,2", "--student-steps", "2",
                                       "--couplings", "16", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["floor"] > 0 and report["samplers"] == report["vmf"]["samplers"]
    names = {entry["name"] for entry in report["samplers"]}
    assert {"teacher/euler", "teacher/heun", "teacher/midpoint", "cfg/euler", "autoguidance/euler", "ema/fixed",
            "raw", "phema/0.1", "phema/0.05", "distilled/1", "distilled/2"} <= names
    for entry in report["samplers"]:
        assert entry["distance"] > 0 and entry["nfe"] >= 1
        assert entry["model_evaluations"] >= entry["nfe"] and entry["cost_50k"] == 50_000 * entry["model_evaluations"]
    by_budget = {(e["name"], e["nfe"]) for e in report["samplers"]}
    assert {("teacher/euler", 1), ("teacher/euler", 2), ("teacher/heun", 2), ("teacher/midpoint", 2)} <= by_budget
    assert ("teacher/heun", 1) not in by_budget  # no Heun step fits one evaluation
    assert {("distilled/1", 1), ("distilled/2", 2)} <= by_budget
    guided = [e for e in report["samplers"] if e["name"] == "autoguidance/euler"]
    assert all(e["guide_step"] == 2 and e["model_evaluations"] == 2 * e["nfe"] for e in guided)
    sweep = report["vmf"]["phema"]
    assert sweep["best"]["distance"] == min(row["distance"] for row in sweep["sweep"])
    assert (out / "plot_vmf.png").stat().st_size > 0 and (out / "vmf" / "teacher" / "phema").is_dir()
    assert json.loads((out / "metrics.json").read_text())["samplers"] == report["samplers"]
