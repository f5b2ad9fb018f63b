"""``dinosae ablate path``: Riemannian against Euclidean flow matching, same model, optimizer, data and budget.

Two DiTs of one preset start from the same weights and see the same batches,
training times and noise draws (the global RNG of the class dropout included);
they differ only in the path: the geodesic path from uniform noise on the
spheres (:func:`dinosae.generation.rfm.rfm_loss`) or the straight path from Gaussian noise
(:func:`dinosae.generation.rfm.euclidean_fm_loss`, its samples normalized onto the spheres).
Every ``eval_every`` steps each model samples as many points as the held-out
set has, with its labels, the same noise and ODE steps each time, and the
sliced W2 distance to the held-out set (fixed projections) is recorded.

Two problems:

- ``vmf``: a class-labelled mixture of von Mises-Fisher products on N spheres,
  sampled exactly, so the training data is unlimited and the held-out set is
  the true distribution;
- ``latents``: a latent cache from ``dinosae encode``, split into training
  latents and a held-out part.

The floor is the distance between an independent sample of the same size and
the held-out set (fresh mixture samples, or training latents), what a perfect
generator scores. A path's final distance is the mean of its last
``FINAL_WINDOW`` evaluations. The speed-up is the ratio of the steps the two
paths need to reach one distance (:func:`speedup`, Euclidean over RFM): at the
final distance of the worse path, which both reach, and at the final distance
of RFM, which Euclidean may never reach (then null).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dinosae.config.training import PATHS

# Seed offsets, so that each random stream is fixed and shared by both paths.
DATA_SEED, NOISE_SEED, EVAL_SEED, PROJECTION_SEED, DROPOUT_SEED = 1, 2, 3, 4, 5
# A path's final distance: the mean of its last evaluations after step 0, which steadies the noise of one.
FINAL_WINDOW = 3

Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Problem:
    """Training data (``draw(n, generator) -> (x (n, N, D), y (n,))``), a held-out set and its floor."""

    name: str
    draw: Draw
    heldout: Tensor
    heldout_labels: Tensor
    num_classes: int
    floor: float
    info: dict

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.heldout.shape[1])


def vmf_problem(*, components: int = 8, tokens: int = 4, dim: int = 32, kappa: float = 400.0,
                heldout: int = 2048, seed: int = 0) -> Problem:
    """A random class-conditional vMF mixture (one class per component), its held-out set and floor.

    Example:
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=64)
        >>> problem.heldout.shape, problem.num_classes, problem.floor < 0.5
        (torch.Size([64, 4, 8]), 2, True)
    """
    from dinosae.data.toy import VMFMixture
    from dinosae.metrics import sliced_wasserstein

    _check_grid(tokens)
    if heldout < 2:
        raise ValueError(f"the held-out set needs at least 2 samples, got {heldout}")
    generator = torch.Generator().manual_seed(seed)
    mixture = VMFMixture.random(components, tokens, dim, kappa=kappa, generator=generator)
    x, y = mixture.sample(heldout, generator)
    floor = sliced_wasserstein(mixture.sample(heldout, generator)[0], x, generator=_seeded(seed + PROJECTION_SEED))
    info = {"components": components, "tokens": tokens, "dim": dim, "kappa": kappa, "heldout": heldout}
    return Problem("vmf", mixture.sample, x, y, mixture.num_classes, floor.item(), info)


def latent_problem(directory: str | os.PathLike, *, heldout_fraction: float = 0.25, max_latents: int | None = 4096,
                   seed: int = 0) -> Problem:
    """Latents of a cache: a random ``max_latents`` of them, ``heldout_fraction`` held out, the rest trained on.

    The floor compares as many training latents as there are held-out ones to the held-out set.
    """
    from dinosae.io.latents import LatentCache, LatentCacheError
    from dinosae.metrics import sliced_wasserstein

    cache = LatentCache(directory)
    _check_grid(cache.tokens)
    if not 0 < heldout_fraction <= 0.5 or (max_latents is not None and max_latents < 4):
        raise ValueError(f"heldout_fraction must be in (0, 0.5] and max_latents >= 4, got {heldout_fraction} "
                         f"and {max_latents}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(cache), generator=generator)[:max_latents].tolist()
    num_heldout = int(len(order) * heldout_fraction)
    if num_heldout < 2:
        raise LatentCacheError(f"latent cache {str(directory)!r} holds {len(cache)} latents: too few to hold out "
                               f"{heldout_fraction:.0%} (at least 2)")
    items = [cache[(i, False)] for i in order]
    x = torch.stack([latent for latent, _ in items])
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    if int(y.max()) >= cache.num_classes:
        raise LatentCacheError(f"latent cache {str(directory)!r} has label {int(y.max())} but "
                               f"{cache.num_classes} classes in its meta.json")
    heldout, train, train_labels = x[:num_heldout], x[num_heldout:], y[num_heldout:]
    floor = sliced_wasserstein(train[:num_heldout], heldout, generator=_seeded(seed + PROJECTION_SEED))

    def draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(train.shape[0], (n,), generator=generator)
        return train[index], train_labels[index]

    info = {"directory": str(directory), "tokens": cache.tokens, "dim": cache.dim, "train": train.shape[0],
            "heldout": num_heldout}
    return Problem("latents", draw, heldout, y[:num_heldout], cache.num_classes, floor.item(), info)


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps after which the distance is measured: 0 (untrained), every ``eval_every``, and the last.

    Example:
        >>> eval_steps(100, 40)
        [0, 40, 80, 100]
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    return sorted({*range(0, steps + 1, eval_every), steps})


def distance_curve(problem: Problem, path: str, *, steps: int, eval_every: int, batch_size: int, preset: str,
                   lr: float, seed: int, sample_steps: int, device: torch.device, precision: str = "fp32",
                   progress: bool = False) -> dict:
    """Train one path on ``problem``; returns ``{"steps", "distance", "final", "final_loss", "nonfinite",
    "seconds"}``.

    ``final`` is the mean distance of the last ``FINAL_WINDOW`` evaluations after step 0, ``final_loss`` the
    mean training loss over the last quarter of the steps, ``nonfinite`` the number of steps whose loss was
    not finite. ``precision`` is the forward pass's autocast (``dinosae.runtime.autocast``).
    """
    from dinosae import create_model
    from dinosae.generation.rfm import euclidean_fm_loss, rfm_loss
    from dinosae.generation.sampling import sample_euclidean, sample_sphere
    from dinosae.metrics import sliced_wasserstein
    from dinosae.runtime import autocast

    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if batch_size < 1 or sample_steps < 1 or not lr > 0:
        raise ValueError(f"batch_size and sample_steps must be >= 1 and lr > 0, got {batch_size}, "
                         f"{sample_steps} and {lr}")
    loss_fn, sampler = (rfm_loss, sample_sphere) if path == "rfm" else (euclidean_fm_loss, sample_euclidean)
    start = time.perf_counter()
    torch.manual_seed(seed)  # the weights
    model = create_model(f"dit-{preset}", in_dim=problem.heldout.shape[2], grid_size=problem.grid_size,
                       num_classes=problem.num_classes, manifold="sphere" if path == "rfm" else "euclidean")
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data, noise = _seeded(seed + DATA_SEED), _seeded(seed + NOISE_SEED, device)
    dropout = _seeded(seed + DROPOUT_SEED, device)
    labels = problem.heldout_labels.to(device)

    def distance() -> float:
        model.eval()
        x = sampler(model, tuple(problem.heldout.shape), labels, steps=sample_steps,
                    generator=_seeded(seed + EVAL_SEED, device))
        model.train()
        return sliced_wasserstein(x.cpu(), problem.heldout, generator=_seeded(seed + PROJECTION_SEED)).item()

    grid = eval_steps(steps, eval_every)
    curve, losses = [distance()], []
    for step in tqdm(range(1, steps + 1), desc=f"{problem.name} {path} {precision}", unit="step",
                     disable=not progress):
        x1, y = problem.draw(batch_size, data)
        with autocast(device, precision):
            loss, _ = loss_fn(model, x1.to(device), model.drop_labels(y.to(device), dropout), generator=noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step in grid:
            curve.append(distance())
    final = sum(curve[1:][-FINAL_WINDOW:]) / len(curve[1:][-FINAL_WINDOW:])
    tail = losses[-max(1, steps // 4):]
    return {"steps": grid, "distance": curve, "final": final, "final_loss": sum(tail) / len(tail),
            "nonfinite": sum(not math.isfinite(v) for v in losses), "seconds": time.perf_counter() - start}


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


def speedup(steps: Sequence[float], rfm: Sequence[float], euclidean: Sequence[float], target: float) -> dict:
    """Steps each path needs to reach ``target`` and their ratio euclidean / rfm (None where one never does).

    Example:
        >>> speedup([0, 10, 20, 30], [1.0, 0.4, 0.3, 0.2], [1.0, 0.8, 0.6, 0.4], 0.4)
        {'target': 0.4, 'rfm_steps': 10.0, 'euclidean_steps': 30.0, 'speedup': 3.0}
    """
    rfm_steps, euclidean_steps = steps_to_reach(steps, rfm, target), steps_to_reach(steps, euclidean, target)
    ratio = None
    if rfm_steps is not None and euclidean_steps is not None and rfm_steps > 0:
        ratio = euclidean_steps / rfm_steps
    return {"target": target, "rfm_steps": rfm_steps, "euclidean_steps": euclidean_steps, "speedup": ratio}


def compare_paths(problem: Problem, out_dir: Path, **training: object) -> dict:
    """Both paths on ``problem``: their curves, the floor, the speed-ups; plots ``out_dir/path_<name>.png``."""
    from dinosae.evaluation.plots import line_plot

    curves = {path: distance_curve(problem, path, **training) for path in PATHS}
    steps, rfm, euclidean = curves["rfm"]["steps"], curves["rfm"]["distance"], curves["euclidean"]["distance"]
    finals = curves["rfm"]["final"], curves["euclidean"]["final"]
    speedups = {"at_worse_final": speedup(steps, rfm, euclidean, max(finals)),
                "at_rfm_final": speedup(steps, rfm, euclidean, finals[0])}
    series = {path: (curve["steps"], curve["distance"]) for path, curve in curves.items()}
    series["floor"] = ([steps[0], steps[-1]], [problem.floor] * 2)
    line_plot(out_dir / f"path_{problem.name}.png", series, title=f"RFM vs Euclidean FM ({problem.name})",
              xlabel="training step", ylabel="sliced W2 to held-out data", logy=True)
    return {"problem": problem.info, "floor": problem.floor, **curves, "speedup": speedups}


def ablate_path(out_dir: str | os.PathLike, *, latents: str | os.PathLike | None = None, steps: int = 400,
                eval_every: int = 25, batch_size: int = 128, lr: float = 1e-3, preset: str = "tiny",
                sample_steps: int = 20, components: int = 8, tokens: int = 4, dim: int = 32, kappa: float = 400.0,
                eval_samples: int = 2048, heldout_fraction: float = 0.25, max_latents: int | None = 4096,
                seed: int = 0, device: str | None = "cpu", progress: bool = True) -> dict:
    """Run the ablation on the vMF mixture (and on a latent cache); write ``metrics.json`` and the plots.

    Returns ``{"settings": {...}, "vmf": {...}, "latents": {...}}`` (``latents``
    only with a cache). Each problem holds ``floor``, ``rfm`` and ``euclidean``
    (``steps``, ``distance``, ``final``, ``seconds``), and ``speedup`` with
    ``at_worse_final`` and ``at_rfm_final`` (``target``, ``rfm_steps``,
    ``euclidean_steps``, ``speedup``). ``eval_samples`` is the size of the
    vMF held-out set; a cache holds out ``heldout_fraction`` of its first
    ``max_latents`` latents in a random order. The cache is read before any
    training, so that a bad one fails at once.

    Example:
        >>> result = ablate_path("runs/ablate-path", steps=400)  # doctest: +SKIP
        >>> print(format_summary(result))  # doctest: +SKIP
    """
    import json

    from dinosae.runtime import pick_device

    eval_steps(steps, eval_every)  # a bad budget, device or cache fails before any training
    torch_device = pick_device(device)
    problems = [] if latents is None else [latent_problem(latents, heldout_fraction=heldout_fraction,
                                                          max_latents=max_latents, seed=seed)]
    problems.insert(0, vmf_problem(components=components, tokens=tokens, dim=dim, kappa=kappa,
                                   heldout=eval_samples, seed=seed))
    training = dict(steps=steps, eval_every=eval_every, batch_size=batch_size, preset=preset, lr=lr, seed=seed,
                    sample_steps=sample_steps)
    out = Path(out_dir)
    result: dict = {"settings": dict(training, device=str(torch_device), final_window=FINAL_WINDOW)}
    for problem in problems:
        result[problem.name] = compare_paths(problem, out, device=torch_device, progress=progress, **training)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def format_summary(result: dict) -> str:
    """A few lines per problem: final distances against the floor, and the speed-ups.

    Example:
        >>> curve = {"final": 0.05, "seconds": 1.0}
        >>> none = {"target": 0.05, "rfm_steps": 4.0, "euclidean_steps": None, "speedup": None}
        >>> print(format_summary({"settings": {}, "vmf": {"floor": 0.01, "rfm": curve, "euclidean": curve,
        ...       "speedup": {"at_worse_final": dict(none, speedup=2.0), "at_rfm_final": none}}}))
        vmf: floor 0.0100
          rfm        final 0.0500  (1 s)
          euclidean  final 0.0500  (1 s)
          speed-up at the worse final distance (0.0500): 2.00x
          speed-up at the RFM final distance (0.0500): not reached
    """
    lines = []
    for name, problem in result.items():
        if name == "settings":
            continue
        lines.append(f"{name}: floor {problem['floor']:.4f}")
        lines += [f"  {path:<10} final {problem[path]['final']:.4f}  ({problem[path]['seconds']:.0f} s)"
                  for path in PATHS]
        for key, words in (("at_worse_final", "the worse final"), ("at_rfm_final", "the RFM final")):
            entry = problem["speedup"][key]
            shown = "not reached" if entry["speedup"] is None else f"{entry['speedup']:.2f}x"
            lines.append(f"  speed-up at {words} distance ({entry['target']:.4f}): {shown}")
    return "\n".join(lines)


def _check_grid(tokens: int) -> None:
    if math.isqrt(tokens) ** 2 != tokens:
        raise ValueError(f"the DiT needs a square grid of tokens, got {tokens}")


def _seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
