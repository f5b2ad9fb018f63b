"""The RFM-vs-Euclidean path ablation: a small run on a vMF mixture and a latent cache, the speed-up, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dinosae.cli.experiments import ablate_path as command
from dinosae.data.toy import VMFMixture
from dinosae.experiments.ablate_path import PATHS, ablate_path, speedup, steps_to_reach
from dinosae.io.latents import write_meta, write_shard

SMALL = dict(steps=80, eval_every=40, batch_size=32, lr=3e-3, sample_steps=8, components=4, tokens=4, dim=8,
             kappa=40.0, eval_samples=256, device="cpu", progress=False)
TINY_FLAGS = ["--steps", "4", "--eval-every", "2", "--batch-size", "16", "--sample-steps", "2",
              "--eval-samples", "32", "--device", "cpu", "--json"]


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


def test_result_has_both_problems_and_paths_and_is_written(ablation):
    out, result = ablation
    assert set(result) == {"settings", "vmf", "latents"}
    assert json.loads((out / "metrics.json").read_text()) == result
    assert (out / "path_vmf.png").stat().st_size > 0 and (out / "path_latents.png").stat().st_size > 0
    assert result["latents"]["problem"]["heldout"] == 80 and result["latents"]["problem"]["train"] == 240
    for name in ("vmf", "latents"):
        problem = result[name]
        assert 0 < problem["floor"] < 0.2
        for path in PATHS:
            curve = problem[path]
            assert curve["steps"] == [0, 40, 80]
            assert len(curve["distance"]) == 3 and curve["final"] == pytest.approx(sum(curve["distance"][1:]) / 2)
        assert set(problem["speedup"]) == {"at_worse_final", "at_rfm_final"}
        worse = problem["speedup"]["at_worse_final"]
        assert worse["target"] == max(problem["rfm"]["final"], problem["euclidean"]["final"])
        # both paths reach the worse final distance, at the latest on their last evaluation
        assert 0 < worse["rfm_steps"] <= 80 and 0 < worse["euclidean_steps"] <= 80
        assert worse["speedup"] == pytest.approx(worse["euclidean_steps"] / worse["rfm_steps"])


def test_both_distance_curves_decrease(ablation):
    _, result = ablation
    for name in ("vmf", "latents"):
        for path in PATHS:
            distance = result[name][path]["distance"]
            print(f"\n[{name} {path}] sliced W2: {' '.join(f'{d:.4f}' for d in distance)}"
                  f" (floor {result[name]['floor']:.4f})")
            assert distance[-1] < 0.6 * distance[0]


def test_paths_start_from_the_same_evaluation_noise(ablation):
    """Untrained DiTs output zero (adaLN-Zero): both samplers return the same normalized Gaussian draws."""
    _, result = ablation
    for name in ("vmf", "latents"):
        assert result[name]["rfm"]["distance"][0] == pytest.approx(result[name]["euclidean"]["distance"][0], rel=1e-5)


def test_steps_to_reach_interpolates_between_evaluations():
    steps = [0, 10, 20, 30]
    assert steps_to_reach(steps, [1.0, 0.6, 0.2, 0.1], 0.4) == pytest.approx(15.0)
    assert steps_to_reach(steps, [1.0, 0.6, 0.2, 0.1], 0.6) == 10.0
    assert steps_to_reach(steps, [1.0, 0.3, 0.5, 0.1], 0.4) == pytest.approx(10 * 0.6 / 0.7)  # the first crossing
    assert steps_to_reach(steps, [1.0, 0.6, 0.5, 0.45], 0.4) is None
    assert steps_to_reach(steps, [0.3, 0.2, 0.1, 0.1], 0.4) == 0.0


def test_speedup_is_the_ratio_of_steps_to_one_quality():
    steps = [0, 25, 50, 75, 100]
    rfm = [0.20, 0.10, 0.06, 0.05, 0.04]
    euclidean = [0.20, 0.14, 0.10, 0.08, 0.06]
    # RFM reaches 0.06 at step 50, Euclidean at 100
    assert speedup(steps, rfm, euclidean, 0.06) == {"target": 0.06, "rfm_steps": 50.0, "euclidean_steps": 100.0,
                                                    "speedup": 2.0}
    # 0.10: RFM at step 25, Euclidean at step 50
    assert speedup(steps, rfm, euclidean, 0.10)["speedup"] == pytest.approx(2.0)
    # 0.08: RFM between 25 and 50 (25 + 25 * 0.02 / 0.04 = 37.5), Euclidean at 75
    assert speedup(steps, rfm, euclidean, 0.08)["speedup"] == pytest.approx(2.0)
    assert speedup(steps, euclidean, rfm, 0.06)["speedup"] == pytest.approx(0.5)
    never = speedup(steps, rfm, euclidean, 0.04)
    assert never["rfm_steps"] == 100.0 and never["euclidean_steps"] is None and never["speedup"] is None
    assert speedup(steps, rfm, euclidean, 0.5)["speedup"] is None  # reached before training: no ratio


def test_cli_prints_the_result_as_json_and_writes_the_plots(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = CliRunner().invoke(command, ["--out", str(out), "--latents", str(cache_dir), *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["settings"]["steps"] == 4
    assert printed["vmf"]["rfm"]["steps"] == printed["latents"]["euclidean"]["steps"] == [0, 2, 4]
    assert printed == json.loads((out / "metrics.json").read_text())
    assert {p.name for p in out.glob("*.png")} == {"path_vmf.png", "path_latents.png"}


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
