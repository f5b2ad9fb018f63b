"""``dinosae ablate path``: the flow's manifold, prediction and solver, as a grid on one budget.

For each manifold (the product of spheres, or R^D) and prediction (the
velocity, or the endpoint x1) a DiT of one preset is trained from the same
weights on the same batches, training times and noise draws (the global RNG
of the class dropout included). Every ``eval_every`` steps it samples as many
points as the held-out set has, with its labels, the same noise and
``sample_steps`` Euler steps each time, and the sliced W2 distance to the
held-out set (fixed projections) is recorded; a run's final distance is the
mean of its last ``FINAL_WINDOW`` evaluations, and its steps to the target
are the training steps its curve needs to reach a fixed distance,
``TARGET_FACTOR`` times the floor (:mod:`dinosae.experiments.problems`).

The trained models then sample with each solver (Euler, Heun) at each number
of function evaluations (``nfes``, NFE), with the same noise: the grid's final
distances. On the sphere, :func:`few_step` looks for the fewest evaluations
(at most ``FEW_STEP_BUDGET``, Euler, Heun or midpoint) that come within
``FEW_STEP_TOLERANCE`` of Euler's distance at 250 steps.

The speed-up of the sphere over R^D, for each prediction, is the ratio of the
training steps the two need to reach one distance (:func:`speedup`): the target,
and the worse of the two final distances, which both reach.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from dinosae.flow.names import MANIFOLDS, PREDICTIONS
from dinosae.experiments.problems import PROJECTION_SEED, Problem, latent_problem, seeded, vmf_problem

# Seed offsets, so that each random stream is fixed and shared by every run (PROJECTION_SEED is 4).
DATA_SEED, NOISE_SEED, EVAL_SEED, DROPOUT_SEED = 1, 2, 3, 5
# A run's final distance: the mean of its last evaluations after step 0, which steadies the noise of one.
FINAL_WINDOW = 3
# The fixed distance whose training steps are counted: this many times the floor.
TARGET_FACTOR = 2.0
GRID_SOLVERS = ("euler", "heun")
GRID_NFES = (4, 8, 16, 32, 64, 250)
FEW_STEP_SOLVERS = ("euler", "heun", "midpoint")
FEW_STEP_NFES = (4, 6, 8, 10, 12, 16, 20, 24)
FEW_STEP_BUDGET, FEW_STEP_TOLERANCE = 25, 0.05


def run_name(manifold: str, prediction: str) -> str:
    """The key of one training run in the results.

    Example:
        >>> run_name("sphere", "x1")
        'sphere/x1'
    """
    return f"{manifold}/{prediction}"


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps after which the distance is measured: 0 (untrained), every ``eval_every``, and the last.

    Example:
        >>> eval_steps(100, 40)
        [0, 40, 80, 100]
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    return sorted({*range(0, steps + 1, eval_every), steps})


def steps_within(method: str, nfe: int, prediction: str) -> int:
    """The most solver steps whose evaluations do not exceed ``nfe`` (at least one step).

    Example:
        >>> steps_within("euler", 8, "velocity"), steps_within("heun", 8, "velocity"), steps_within("heun", 8, "x1")
        (8, 4, 4)
    """
    from dinosae.flow import function_evaluations

    steps = 1
    while function_evaluations(method, steps + 1, prediction) <= nfe:
        steps += 1
    return steps


def sampled_distance(model: torch.nn.Module, problem: Problem, *, method: str, steps: int, seed: int,
                     device: torch.device, **sampler: object) -> float:
    """The sliced W2 between the held-out set and as many samples of ``model`` (unit tokens), drawn with its
    labels from the evaluation noise; ``sampler`` goes to :func:`dinosae.flow.sample` (guidance, shift).

    Example:
        >>> from dinosae import create_model
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=16)
        >>> model = create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=2)
        >>> 0 < sampled_distance(model, problem, method="heun", steps=2, seed=0, device=torch.device("cpu")) < 1
        True
    """
    import sphere_ops
    from dinosae.flow import sample
    from dinosae.metrics import sliced_wasserstein

    was_training = model.training
    model.eval()
    x = sample(model, model.manifold, tuple(problem.heldout.shape), problem.heldout_labels.to(device),
               prediction=model.config.prediction, steps=steps, method=method,
               generator=seeded(seed + EVAL_SEED, device), **sampler)
    model.train(was_training)
    distance = sliced_wasserstein(sphere_ops.normalize(x).cpu(), problem.heldout,
                                  generator=seeded(seed + PROJECTION_SEED))
    return distance.item()


def train_run(problem: Problem, manifold: str = "sphere", prediction: str = "velocity", *, steps: int,
              eval_every: int, batch_size: int, preset: str, lr: float, seed: int, sample_steps: int,
              device: torch.device, precision: str = "fp32", progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """Train one run on ``problem``; returns the model and ``{"steps", "distance", "final", "final_loss",
    "nonfinite", "seconds"}``.

    ``final`` is the mean distance of the last ``FINAL_WINDOW`` evaluations after step 0, ``final_loss`` the
    mean training loss over the last quarter of the steps, ``nonfinite`` the number of steps whose loss was
    not finite. ``precision`` is the forward pass's autocast (``dinosae.runtime.autocast``).

    Example:
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=16)
        >>> model, run = train_run(problem, "euclidean", "x1", steps=2, eval_every=1, batch_size=8, preset="tiny",
        ...                        lr=1e-3, seed=0, sample_steps=2, device=torch.device("cpu"))
        >>> model.config.prediction, run["steps"], len(run["distance"])
        ('x1', [0, 1, 2], 3)
    """
    from dinosae import create_model
    from dinosae.flow import flow_matching_loss
    from dinosae.runtime import autocast

    if manifold not in MANIFOLDS or prediction not in PREDICTIONS:
        raise ValueError(f"manifold must be one of {MANIFOLDS} and prediction one of {PREDICTIONS}, got "
                         f"{manifold!r} and {prediction!r}")
    if batch_size < 1 or sample_steps < 1 or not lr > 0:
        raise ValueError(f"batch_size and sample_steps must be >= 1 and lr > 0, got {batch_size}, "
                         f"{sample_steps} and {lr}")
    start = time.perf_counter()
    torch.manual_seed(seed)  # the weights
    model = create_model(f"dit-{preset}", in_dim=problem.heldout.shape[2], grid_size=problem.grid_size,
                         num_classes=problem.num_classes, manifold=manifold, prediction=prediction).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data, noise = seeded(seed + DATA_SEED), seeded(seed + NOISE_SEED, device)
    dropout = seeded(seed + DROPOUT_SEED, device)

    def distance() -> float:
        return sampled_distance(model, problem, method="euler", steps=sample_steps, seed=seed, device=device)

    grid = eval_steps(steps, eval_every)
    curve, losses = [distance()], []
    for step in tqdm(range(1, steps + 1), desc=f"{problem.name} {run_name(manifold, prediction)} {precision}",
                     unit="step", disable=not progress):
        x1, y = problem.draw(batch_size, data)
        with autocast(device, precision):
            loss, _ = flow_matching_loss(model, model.manifold, x1.to(device), model.drop_labels(y.to(device), dropout),
                                         prediction=prediction, generator=noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in grid:
            curve.append(distance())
    final = sum(curve[1:][-FINAL_WINDOW:]) / len(curve[1:][-FINAL_WINDOW:])
    tail = losses[-max(1, steps // 4):]
    return model, {"steps": grid, "distance": curve, "final": final, "final_loss": sum(tail) / len(tail),
                   "nonfinite": sum(not math.isfinite(v) for v in losses), "seconds": time.perf_counter() - start}


def distance_curve(problem: Problem, manifold: str = "sphere", prediction: str = "velocity",
                   **training: object) -> dict:
    """The curve of :func:`train_run`, without the model."""
    return train_run(problem, manifold, prediction, **training)[1]


def solver_grid(model: torch.nn.Module, problem: Problem, *, solvers: Sequence[str], nfes: Sequence[int], seed: int,
                device: torch.device) -> dict[str, dict[str, dict]]:
    """``{solver: {str(nfe): {"nfe", "steps", "distance"}}}``: the distance of ``model``'s samples with each
    solver at each budget of evaluations (``nfe`` is what the solver used, at most the budget).

    Example:
        >>> from dinosae import create_model
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=16)
        >>> model = create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=2, prediction="x1")
        >>> grid = solver_grid(model, problem, solvers=("heun",), nfes=(4,), seed=0, device=torch.device("cpu"))
        >>> grid["heun"]["4"]["steps"], grid["heun"]["4"]["nfe"]
        (2, 3)
    """
    from dinosae.flow import function_evaluations

    prediction = model.config.prediction
    grid: dict[str, dict[str, dict]] = {}
    for method in solvers:
        grid[method] = {}
        for budget in nfes:
            steps = steps_within(method, budget, prediction)
            grid[method][str(budget)] = {
                "nfe": function_evaluations(method, steps, prediction), "steps": steps,
                "distance": sampled_distance(model, problem, method=method, steps=steps, seed=seed, device=device)}
    return grid


def few_step(grid: dict[str, dict[str, dict]], reference: float) -> dict:
    """The cell of ``grid`` with the fewest evaluations (then the smallest distance) within
    ``FEW_STEP_TOLERANCE`` of ``reference`` and ``FEW_STEP_BUDGET`` evaluations, and the closest cell in that
    budget, met or not.

    Example:
        >>> grid = {"euler": {"8": {"nfe": 8, "distance": 0.2}}, "heun": {"8": {"nfe": 8, "distance": 0.104}}}
        >>> result = few_step(grid, 0.1)
        >>> result["best"]["solver"], result["best"]["nfe"], result["met"]
        ('heun', 8, True)
    """
    cells = [{"solver": method, **cell} for method, cells in grid.items() for cell in cells.values()
             if cell["nfe"] <= FEW_STEP_BUDGET]
    within = [cell for cell in cells if cell["distance"] <= (1 + FEW_STEP_TOLERANCE) * reference]
    best = min(within, key=lambda cell: (cell["nfe"], cell["distance"])) if within else None
    closest = min(cells, key=lambda cell: cell["distance"]) if cells else None
    return {"reference": reference, "tolerance": FEW_STEP_TOLERANCE, "budget": FEW_STEP_BUDGET,
            "met": best is not None, "best": best, "closest": closest}


def steps_to_reach(steps: Sequence[float], distances: Sequence[float], target: float) -> float | None:
    """The first step at which a distance curve reaches ``target``, linear between evaluations; None if never.

    Example:
        >>> steps_to_reach([0, 10, 20], [1.0, 0.5, 0.25], 0.375)
        15.0
        >>> steps_to_reach([0, 10, 20], [1.0, 0.5, 0.25], 0.2) is None
        True
    """
    for i, value in enumerate(distances):
        if value <= target:
            if i == 0:
                return float(steps[0])
            before = distances[i - 1]
            return steps[i - 1] + (steps[i] - steps[i - 1]) * (before - target) / (before - value)
    return None


def speedup(steps: Sequence[float], sphere: Sequence[float], euclidean: Sequence[float], target: float) -> dict:
    """Steps each run needs to reach ``target`` and their ratio euclidean / sphere (None where one never does).

    Example:
        >>> speedup([0, 10, 20, 30], [1.0, 0.4, 0.3, 0.2], [1.0, 0.8, 0.6, 0.4], 0.4)
        {'target': 0.4, 'sphere_steps': 10.0, 'euclidean_steps': 30.0, 'speedup': 3.0}
    """
    sphere_steps, euclidean_steps = steps_to_reach(steps, sphere, target), steps_to_reach(steps, euclidean, target)
    ratio = None
    if sphere_steps is not None and euclidean_steps is not None and sphere_steps > 0:
        ratio = euclidean_steps / sphere_steps
    return {"target": target, "sphere_steps": sphere_steps, "euclidean_steps": euclidean_steps, "speedup": ratio}


def compare_runs(problem: Problem, out_dir: Path, *, nfes: Sequence[int], few_step_nfes: Sequence[int],
                 **training: object) -> dict:
    """Every run of the grid on ``problem``: curves, solver grids, few-step searches, speed-ups; plots
    ``out_dir/path_<name>.png`` (curves) and ``out_dir/nfe_<name>.png`` (distance against NFE).

    Example:
        >>> import tempfile
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=16)
        >>> result = compare_runs(problem, Path(tempfile.mkdtemp()), nfes=(2,), few_step_nfes=(2,), steps=1,
        ...                       eval_every=1, batch_size=8, preset="tiny", lr=1e-3, seed=0, sample_steps=1,
        ...                       device=torch.device("cpu"))
        >>> list(result["runs"]), sorted(result["speedup"])
        (['sphere/velocity', 'sphere/x1', 'euclidean/velocity', 'euclidean/x1'], ['velocity', 'x1'])
    """
    from dinosae.evaluation.plots import line_plot

    seed, device = training["seed"], training["device"]
    target = TARGET_FACTOR * problem.floor
    runs: dict[str, dict] = {}
    for manifold in MANIFOLDS:
        for prediction in PREDICTIONS:
            model, run = train_run(problem, manifold, prediction, **training)
            run["steps_to_target"] = steps_to_reach(run["steps"], run["distance"], target)
            run["solvers"] = solver_grid(model, problem, solvers=GRID_SOLVERS, nfes=nfes, seed=seed, device=device)
            if manifold == "sphere" and few_step_nfes:
                reference = solver_grid(model, problem, solvers=("euler",), nfes=(250,), seed=seed, device=device)
                search = solver_grid(model, problem, solvers=FEW_STEP_SOLVERS, nfes=few_step_nfes, seed=seed,
                                     device=device)
                run["few_step"] = few_step(search, reference["euler"]["250"]["distance"])
            runs[run_name(manifold, prediction)] = run
    speedups = {}
    for prediction in PREDICTIONS:
        sphere, flat = runs[run_name("sphere", prediction)], runs[run_name("euclidean", prediction)]
        speedups[prediction] = {
            "at_target": speedup(sphere["steps"], sphere["distance"], flat["distance"], target),
            "at_worse_final": speedup(sphere["steps"], sphere["distance"], flat["distance"],
                                      max(sphere["final"], flat["final"]))}
    steps = next(iter(runs.values()))["steps"]
    curves = {name: (run["steps"], run["distance"]) for name, run in runs.items()}
    curves["floor"] = ([steps[0], steps[-1]], [problem.floor] * 2)
    line_plot(out_dir / f"path_{problem.name}.png", curves, title=f"flow matching runs ({problem.name})",
              xlabel="training step", ylabel="sliced W2 to held-out data", logy=True)
    by_nfe = {f"{name} {method}": ([cell["nfe"] for cell in cells.values()],
                                   [cell["distance"] for cell in cells.values()])
              for name, run in runs.items() for method, cells in run["solvers"].items()}
    line_plot(out_dir / f"nfe_{problem.name}.png", by_nfe, title=f"final distance by solver ({problem.name})",
              xlabel="function evaluations", ylabel="sliced W2 to held-out data", logy=True)
    return {"problem": problem.info, "floor": problem.floor, "target": target, "runs": runs, "speedup": speedups}


def ablate_path(out_dir: str | os.PathLike, *, latents: str | os.PathLike | None = None, steps: int = 400,
                eval_every: int = 25, batch_size: int = 128, lr: float = 1e-3, preset: str = "tiny",
                sample_steps: int = 20, components: int = 8, tokens: int = 4, dim: int = 32, kappa: float = 400.0,
                eval_samples: int = 2048, heldout_fraction: float = 0.25, max_latents: int | None = 4096,
                nfes: Sequence[int] = GRID_NFES, few_step_nfes: Sequence[int] = FEW_STEP_NFES, seed: int = 0,
                device: str | None = "cpu", progress: bool = True) -> dict:
    """Run the grid on the vMF mixture (and on a latent cache); write ``metrics.json`` and the plots.

    Returns ``{"settings": {...}, "vmf": {...}, "latents": {...}}`` (``latents`` only with a cache). Each
    problem holds ``floor``, ``target``, ``runs`` (per ``"manifold/prediction"``: the curve's ``steps``,
    ``distance``, ``final``, ``steps_to_target``, ``seconds``, ``solvers`` and, on the sphere, ``few_step``) and
    ``speedup`` per prediction (``at_target``, ``at_worse_final``). ``eval_samples`` is the size of the vMF
    held-out set; a cache holds out ``heldout_fraction`` of its first ``max_latents`` latents in a random
    order, and is read before any training, so that a bad one fails at once.

    Example:
        >>> result = ablate_path("runs/ablate-path", steps=400)  # doctest: +SKIP
        >>> print(format_summary(result))  # doctest: +SKIP
    """
    import json

    from dinosae.runtime import pick_device

    eval_steps(steps, eval_every)  # a bad budget, device or cache fails before any training
    if not nfes or min(nfes) < 1 or (few_step_nfes and min(few_step_nfes) < 1):
        raise ValueError(f"nfes must be a non-empty list of counts >= 1, got {list(nfes)}")
    torch_device = pick_device(device)
    problems = [] if latents is None else [latent_problem(latents, heldout_fraction=heldout_fraction,
                                                          max_latents=max_latents, seed=seed)]
    problems.insert(0, vmf_problem(components=components, tokens=tokens, dim=dim, kappa=kappa,
                                   heldout=eval_samples, seed=seed))
    training = dict(steps=steps, eval_every=eval_every, batch_size=batch_size, preset=preset, lr=lr, seed=seed,
                    sample_steps=sample_steps)
    out = Path(out_dir)
    result: dict = {"settings": dict(training, device=str(torch_device), final_window=FINAL_WINDOW,
                                     target_factor=TARGET_FACTOR, nfes=list(nfes), few_step_nfes=list(few_step_nfes))}
    for problem in problems:
        result[problem.name] = compare_runs(problem, out, nfes=nfes, few_step_nfes=few_step_nfes,
                                            device=torch_device, progress=progress, **training)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
