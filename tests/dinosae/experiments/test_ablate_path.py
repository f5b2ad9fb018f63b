"""The flow ablation grid: a small run on a vMF mixture and a latent cache, the speed-ups, the few-step search,
the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dinosae.cli.experiments import ablate_path as command
from dinosae.data.toy import VMFMixture
from dinosae.experiments.ablate_path import ablate_path, speedup, steps_to_reach, steps_within
from dinosae.experiments.path_report import format_summary, format_table
from dinosae.data.latents import write_meta, write_shard

SMALL = dict(steps=80, eval_every=40, batch_size=32, lr=3e-3, sample_steps=8, components=4, tokens=4, dim=8,
             kappa=40.0, eval_samples=256, nfes=(2, 4), few_step_nfes=(4, 8), device="cpu", progress=False)
TINY_FLAGS = ["--steps", "4", "--eval-every", "2", "--batch-size", "16", "--sample-steps", "2",
              "--eval-samples", "32", "--nfe", "2", "--device", "cpu", "--json"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and lose up to 10x when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """320 latents of a vMF mixture (4 classes, 4 tokens x 8 dims) as a finished latent cache."""
    root = tmp_path_factory.mktemp("latents")
    generator = torch.Generator().manual_seed(5)
    x, y = VMFMixture.random(4, tokens=4, dim=8, kappa=40.0, generator=generator).sample(320, generator)
    write_shard(root, 0, x, y)
    write_meta(root, {"num": 320, "tokens": 4, "dim": 8, "shard_counts": [320], "num_shards": 1, "flip": False,
                      "classes": ["a", "b", "c", "d"]})
    return root


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("ablate_path")
    return out, ablate_path(out, latents=cache_dir, **SMALL)


RUNS = [f"{manifold}/{prediction}" for manifold in ("sphere", "euclidean") for prediction in ("velocity", "x1")]


def test_result_has_both_problems_and_every_run_and_is_written(ablation):
    out, result = ablation
    assert set(result) == {"settings", "vmf", "latents"}
    assert json.loads((out / "metrics.json").read_text()) == result
    for name in ("path_vmf.png", "path_latents.png", "nfe_vmf.png", "nfe_latents.png"):
        assert (out / name).stat().st_size > 0
    assert result["latents"]["problem"]["heldout"] == 80 and result["latents"]["problem"]["train"] == 240
    for name in ("vmf", "latents"):
        problem = result[name]
        assert 0 < problem["floor"] < 0.2 and problem["target"] == pytest.approx(2 * problem["floor"])
        assert list(problem["runs"]) == RUNS
        for key, run in problem["runs"].items():
            assert run["steps"] == [0, 40, 80]
            assert len(run["distance"]) == 3 and run["final"] == pytest.approx(sum(run["distance"][1:]) / 2)
            assert set(run["solvers"]) == {"euler", "heun"} and set(run["solvers"]["heun"]) == {"2", "4"}
            assert run["solvers"]["euler"]["4"]["nfe"] == 4
            assert run["solvers"]["heun"]["4"]["nfe"] == (4 if key.endswith("velocity") else 3)
            assert ("few_step" in run) == key.startswith("sphere")
        for prediction in ("velocity", "x1"):
            worse = problem["speedup"][prediction]["at_worse_final"]
            finals = [problem["runs"][f"{m}/{prediction}"]["final"] for m in ("sphere", "euclidean")]
            assert worse["target"] == max(finals)
            # both runs reach the worse final distance, at the latest on their last evaluation
            assert 0 < worse["sphere_steps"] <= 80 and 0 < worse["euclidean_steps"] <= 80


def test_every_distance_curve_decreases(ablation):
    _, result = ablation
    for name in ("vmf", "latents"):
        for key, run in result[name]["runs"].items():
            print(f"\n[{name} {key}] sliced W2: {' '.join(f'{d:.4f}' for d in run['distance'])}"
                  f" (floor {result[name]['floor']:.4f})")
            # endpoint models learn more slowly on this 80-step budget (the grid's table says by how much)
            assert run["distance"][-1] < (0.6 if key.endswith("velocity") else 0.8) * run["distance"][0]


def test_runs_start_from_the_same_evaluation_noise(ablation):
    """Untrained DiTs predict zero velocity, or x1 = x_t (adaLN-Zero): every run returns its normalized noise,
    and the sphere's and R^D's noise are one draw (uniform points are normalized Gaussians)."""
    _, result = ablation
    for name in ("vmf", "latents"):
        first = [run["distance"][0] for run in result[name]["runs"].values()]
        assert first == pytest.approx([first[0]] * 4, rel=1e-5)


def test_few_step_search_compares_with_euler_250(ablation):
    _, result = ablation
    search = result["vmf"]["runs"]["sphere/velocity"]["few_step"]
    assert search["budget"] == 25 and search["tolerance"] == 0.05
    if search["met"]:
        assert search["best"]["distance"] <= 1.05 * search["reference"] and search["best"]["nfe"] <= 25
    assert search["closest"]["solver"] in ("euler", "heun", "midpoint")


def test_steps_within_a_budget_of_evaluations():
    assert [steps_within("euler", n, "velocity") for n in (1, 4, 250)] == [1, 4, 250]
    assert [steps_within("heun", n, "velocity") for n in (1, 4, 5, 250)] == [1, 2, 2, 125]
    assert [steps_within("heun", n, "x1") for n in (1, 3, 4, 249)] == [1, 2, 2, 125]
    assert steps_within("midpoint", 7, "x1") == 3


def test_the_table_and_summary_show_every_run(ablation):
    _, result = ablation
    table = format_table(result).splitlines()
    assert table[0].startswith("| manifold | prediction | solver | NFE 2 | NFE 4 |") and len(table) == 2 + 8
    summary = format_summary(result)
    assert all(key in summary for key in RUNS) and "few steps" in summary


def test_steps_to_reach_interpolates_between_evaluations():
    steps = [0, 10, 20, 30]
    assert steps_to_reach(steps, [1.0, 0.6, 0.2, 0.1], 0.4) == pytest.approx(15.0)
    assert steps_to_reach(steps, [1.0, 0.6, 0.2, 0.1], 0.6) == 10.0
    assert steps_to_reach(steps, [1.0, 0.3, 0.5, 0.1], 0.4) == pytest.approx(10 * 0.6 / 0.7)  # the first crossing
    assert steps_to_reach(steps, [1.0, 0.6, 0.5, 0.45], 0.4) is None
    assert steps_to_reach(steps, [0.3, 0.2, 0.1, 0.1], 0.4) == 0.0


def test_speedup_is_the_ratio_of_steps_to_one_quality():
    steps = [0, 25, 50, 75, 100]
    sphere = [0.20, 0.10, 0.06, 0.05, 0.04]
    euclidean = [0.20, 0.14, 0.10, 0.08, 0.06]
    # the sphere reaches 0.06 at step 50, R^D at 100
    assert speedup(steps, sphere, euclidean, 0.06) == {"target": 0.06, "sphere_steps": 50.0,
                                                       "euclidean_steps": 100.0, "speedup": 2.0}
    # 0.10: the sphere at step 25, R^D at step 50
    assert speedup(steps, sphere, euclidean, 0.10)["speedup"] == pytest.approx(2.0)
    # 0.08: the sphere between 25 and 50 (25 + 25 * 0.02 / 0.04 = 37.5), R^D at 75
    assert speedup(steps, sphere, euclidean, 0.08)["speedup"] == pytest.approx(2.0)
    assert speedup(steps, euclidean, sphere, 0.06)["speedup"] == pytest.approx(0.5)
    never = speedup(steps, sphere, euclidean, 0.04)
    assert never["sphere_steps"] == 100.0 and never["euclidean_steps"] is None and never["speedup"] is None
    assert speedup(steps, sphere, euclidean, 0.5)["speedup"] is None  # reached before training: no ratio


@pytest.mark.slow  # about 30 s; the command's JSON is checked by the vMF-only run below, the result by the fixture's
def test_cli_prints_the_result_as_json_and_writes_the_plots(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = CliRunner().invoke(command, ["--out", str(out), "--latents", str(cache_dir), *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["settings"]["steps"] == 4
    runs = printed["vmf"]["runs"]
    assert runs["sphere/velocity"]["steps"] == printed["latents"]["runs"]["euclidean/x1"]["steps"] == [0, 2, 4]
    assert list(runs["sphere/x1"]["solvers"]["euler"]) == ["2"]
    assert printed == json.loads((out / "metrics.json").read_text())
    assert {p.name for p in out.glob("*.png")} == {"path_vmf.png", "path_latents.png", "nfe_vmf.png",
                                                   "nfe_latents.png"}


def test_cli_without_latents_runs_the_vmf_problem_only(tmp_path):
    result = CliRunner().invoke(command, ["--out", str(tmp_path), *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) == {"settings", "vmf"}
    assert not (tmp_path / "path_latents.png").exists()


def _unfinished_cache(root):
    generator = torch.Generator().manual_seed(0)
    write_shard(root, 0, *VMFMixture.random(2, tokens=4, dim=8, kappa=10.0, generator=generator).sample(8, generator))
    return root


def _non_square_cache(root):
    generator = torch.Generator().manual_seed(0)
    write_shard(root, 0, *VMFMixture.random(2, tokens=3, dim=8, kappa=10.0, generator=generator).sample(8, generator))
    write_meta(root, {"num": 8, "tokens": 3, "dim": 8, "shard_counts": [8], "num_shards": 1, "flip": False,
                      "classes": ["a", "b"]})
    return root


@pytest.mark.parametrize("make, reason", [
    (lambda root: root / "missing", "is not a finished latent cache"),
    (_unfinished_cache, "is not a finished latent cache"),
    (_non_square_cache, "square grid of tokens, got 3"),
])
def test_cli_refuses_a_bad_cache_in_one_line(tmp_path, make, reason):
    latents = make(tmp_path)
    result = CliRunner().invoke(command, ["--out", str(tmp_path / "run"), "--latents", str(latents), *TINY_FLAGS])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and reason in result.output
    assert not (tmp_path / "run").exists()  # it failed before training anything
