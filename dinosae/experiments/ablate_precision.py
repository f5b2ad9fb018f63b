"""``dinosae ablate precision``: RFM training under bfloat16 autocast against float32, same seeds and budget.

The HAE paper (arXiv 2601.22904v2) reports that bf16 RFM training was
numerically unstable for its authors, and trains in float32. Here one RFM run
(the same model, batches, times and noise) trains in float32 and under bf16
autocast, for several seeds, on the vMF mixture and, with a latent cache, on
real latents (the problems of ``dinosae ablate path``). The DiT's matmuls run
in bf16; the geometry (x_t, the target velocity, the tangent projection) runs
in the fused sphere ops, which compute in float32 whatever their inputs.

Reported per precision and seed: the mean loss over the last quarter of the
steps, the sliced W2 of samples to held-out data, and how many losses were not
finite. "Within noise" compares the largest float32-bf16 difference of one seed
with the spread of float32 across seeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from dinosae.experiments.ablate_path import distance_curve
from dinosae.experiments.problems import Problem, latent_problem, vmf_problem
from dinosae.io.atomic import write_json
from dinosae.runtime import pick_device

PRECISIONS = ("fp32", "bf16")


def compare_precisions(problem: Problem, seeds: Sequence[int], **training: object) -> dict:
    """RFM on ``problem`` in both precisions for each seed: their curves and the spreads.

    Returns ``{"floor", "runs": {precision: [curve per seed]}, "loss_gap", "loss_seed_spread",
    "distance_gap", "distance_seed_spread", "nonfinite"}``: a gap is the largest |bf16 - fp32| of one
    seed, a seed spread the range of fp32 over seeds.
    """
    runs = {precision: [distance_curve(problem, "sphere", precision=precision, seed=seed, **training)
                        for seed in seeds] for precision in PRECISIONS}
    result: dict = {"problem": problem.info, "floor": problem.floor, "runs": runs}
    for key, name in (("final_loss", "loss"), ("final", "distance")):
        fp32, bf16 = [run[key] for run in runs["fp32"]], [run[key] for run in runs["bf16"]]
        result[f"{name}_gap"] = max(abs(a - b) for a, b in zip(fp32, bf16))
        result[f"{name}_seed_spread"] = max(fp32) - min(fp32)
    result["nonfinite"] = {precision: sum(run["nonfinite"] for run in curves) for precision, curves in runs.items()}
    return result


def ablate_precision(out_dir: str | os.PathLike, *, latents: str | os.PathLike | None = None, steps: int = 300,
                     eval_every: int = 100, batch_size: int = 128, lr: float = 1e-3, preset: str = "tiny",
                     sample_steps: int = 20, seeds: Sequence[int] = (0, 1, 2), eval_samples: int = 1024,
                     max_latents: int | None = 4096, device: str | None = "cpu", progress: bool = True) -> dict:
    """Run the comparison on the vMF mixture (and a latent cache); write ``metrics.json``.

    Example:
        >>> result = ablate_precision("runs/ablate-precision", steps=300)  # doctest: +SKIP
        >>> print(format_table(result))  # doctest: +SKIP
    """
    torch_device = pick_device(device)
    problems = [vmf_problem(heldout=eval_samples, seed=0)]
    if latents is not None:
        problems.append(latent_problem(latents, max_latents=max_latents, seed=0))
    training = dict(steps=steps, eval_every=eval_every, batch_size=batch_size, preset=preset, lr=lr,
                    sample_steps=sample_steps, device=torch_device, progress=progress)
    result: dict = {"settings": {k: str(v) if isinstance(v, torch.device) else v for k, v in training.items()
                                 if k != "progress"} | {"seeds": list(seeds)}}
    for problem in problems:
        result[problem.name] = compare_precisions(problem, seeds, **training)
    write_json(Path(out_dir) / "metrics.json", result)
    return result


def format_table(result: dict) -> str:
    """A markdown table: per problem and precision, the mean final loss and distance over seeds.

    Example:
        >>> run = {"final_loss": 2.0, "final": 0.1, "nonfinite": 0}
        >>> problem = {"floor": 0.05, "runs": {"fp32": [run], "bf16": [run]}, "loss_gap": 0.0,
        ...            "loss_seed_spread": 0.1, "distance_gap": 0.0, "distance_seed_spread": 0.01}
        >>> print(format_table({"settings": {}, "vmf": problem}))
        | problem | precision | final loss | sliced W2 (floor) | non-finite losses |
        |---|---|---|---|---|
        | vmf | fp32 | 2.0000 | 0.1000 (0.0500) | 0 |
        | vmf | bf16 | 2.0000 | 0.1000 (0.0500) | 0 |
        | vmf | bf16 - fp32, worst seed | 0.0000 | 0.0000 | |
        | vmf | fp32 seed spread | 0.1000 | 0.0100 | |
    """
    lines = ["| problem | precision | final loss | sliced W2 (floor) | non-finite losses |", "|---|---|---|---|---|"]
    for name, problem in result.items():
        if name == "settings":
            continue
        for precision, runs in problem["runs"].items():
            loss = sum(r["final_loss"] for r in runs) / len(runs)
            distance = sum(r["final"] for r in runs) / len(runs)
            nonfinite = sum(r["nonfinite"] for r in runs)
            lines.append(f"| {name} | {precision} | {loss:.4f} | {distance:.4f} ({problem['floor']:.4f}) "
                         f"| {nonfinite} |")
        lines.append(f"| {name} | bf16 - fp32, worst seed | {problem['loss_gap']:.4f} | "
                     f"{problem['distance_gap']:.4f} | |")
        lines.append(f"| {name} | fp32 seed spread | {problem['loss_seed_spread']:.4f} | "
                     f"{problem['distance_seed_spread']:.4f} | |")
    return "\n".join(lines)
