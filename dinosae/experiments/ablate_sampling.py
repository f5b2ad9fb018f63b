"""``dinosae ablate sampling``: every way to sample a trained DiT, on one problem, by held-out distance and NFE.

One teacher is trained with ``dinosae train dit`` itself, on a latent cache
written from the problem (the class-labelled vMF mixture, or a cache of real
latents, :mod:`dinosae.experiments.problems`): its checkpoints, EMA and
post-hoc EMA snapshots are the ones a real run keeps. Then, with the same
evaluation noise and labels for every sampler, the sliced W2 to the held-out
set of:

- ``teacher/<solver>``: Euler, Heun and midpoint at each budget of function
  evaluations (NFE), and ``teacher/euler`` at ``REFERENCE_STEPS``, the reference;
- ``cfg/euler``: classifier-free guidance at each scale;
- ``autoguidance/euler``: AutoGuidance by the run's checkpoint at a quarter
  of the training (``RUN@STEP``) at each weight;
- ``phema/<sigma_rel>``: the post-hoc EMA sweep (:mod:`dinosae.train.phema`),
  against the run's fixed EMA (``ema/fixed``) and its raw weights (``raw``);
- ``distilled/<K>``: students of ``dinosae distill`` (:mod:`dinosae.train.distill`)
  that sample in K Euler steps.

Each entry of ``samplers`` is ``{"name", "nfe", "distance", "model_evaluations"}``;
``model_evaluations`` counts the network passes per sample (a guided step
runs the batch twice, AutoGuidance runs the guide too), which is what 50,000
samples cost. ``plot.png`` draws distance against NFE.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from dinosae.experiments.ablate_path import NOISE_SEED, sampled_distance, steps_within
from dinosae.experiments.problems import Problem, latent_problem, seeded, vmf_problem

SOLVERS = ("euler", "heun", "midpoint")
NFES = (1, 2, 4, 8, 16, 32)
REFERENCE_STEPS = 250
# The fixed number of Euler steps of the guidance and EMA comparisons.
COMPARE_STEPS = 32
CFG_SCALES = (1.5, 2.0)
AUTOGUIDANCE_WEIGHTS = (1.25, 1.5, 2.0)
SIGMA_RELS = (0.01, 0.02, 0.035, 0.05, 0.075, 0.10, 0.15, 0.20, 0.25)
# Samples of ImageNet's FID protocol, for the cost column.
FID_SAMPLES = 50_000


@dataclass(frozen=True)
class TeacherSettings:
    """How the teacher is trained: ``steps`` of ``batch_size`` at ``lr``, a checkpoint every quarter (all
    kept, for AutoGuidance), post-hoc EMA snapshots every ``phema_every`` steps, the fixed EMA at
    ``ema_decay`` with warm-up, on ``train_samples`` draws of the problem."""

    preset: str = "tiny"
    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.995
    phema_every: int = 50
    train_samples: int = 32_768


@dataclass(frozen=True)
class StudentSettings:
    """How each student is distilled (``DistillConfig``): ``steps`` of ``batch_size`` couplings at ``lr``, from
    ``couplings`` teacher trajectories of ``teacher_steps`` midpoint steps; one student per ``nfes``."""

    nfes: tuple[int, ...] = (1, 2, 4)
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    couplings: int = 16_384
    teacher_steps: int = 32


def write_training_cache(problem: Problem, directory: Path, num: int, seed: int) -> Path:
    """``num`` draws of ``problem`` as a latent cache (what ``dinosae encode`` writes), for ``train dit``."""
    from dinosae.data.latents import write_meta, write_shard

    x, y = problem.draw(num, seeded(seed + NOISE_SEED + 100))
    directory.mkdir(parents=True, exist_ok=True)
    write_shard(directory, 0, x, y)
    write_meta(directory, {"num": num, "tokens": x.shape[1], "dim": x.shape[2], "shard_counts": [num],
                           "num_shards": 1, "flip": False,
                           "classes": [f"class_{c}" for c in range(problem.num_classes)]})
    return directory


def train_teacher(problem: Problem, out: Path, settings: TeacherSettings, seed: int, device: str) -> Path:
    """Train the teacher with ``dinosae train dit`` into ``out/teacher``; returns the run directory."""
    from dinosae.config import DiTTrainConfig
    from dinosae.data.latents import LatentCache
    from dinosae.train.dit import dit_config_for, train_dit

    cache = write_training_cache(problem, out / "data", settings.train_samples, seed)
    quarter = max(1, settings.steps // 4)
    config = DiTTrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                            ema_decay=settings.ema_decay, ema_warmup=True, time_sampler="uniform", shift=1.0,
                            flip=False, seed=seed, log_every=quarter, ckpt_every=quarter, keep_last=8,
                            phema_every=settings.phema_every, num_workers=0, precision="fp32")
    run = out / "teacher"
    train_dit(run, cache, dit_config_for(LatentCache(cache), settings.preset), config, device=device, resume="auto")
    return run


def _entry(name: str, nfe: int, distance: float, evaluations: int, **extra: object) -> dict:
    return {"name": name, "nfe": nfe, "distance": distance, "model_evaluations": evaluations,
            "cost_50k": evaluations * FID_SAMPLES, **extra}


def distill_students(run: Path, folder: Path, students: StudentSettings, seed: int, device: str) -> dict[int, Path]:
    """One student per NFE of ``students``, distilled from the teacher of ``run`` into ``folder/student_<K>``."""
    from dinosae.config import DistillConfig
    from dinosae.train.distill import distill

    found = {}
    for nfe in students.nfes:
        config = DistillConfig(nfe=nfe, steps=students.steps, batch_size=students.batch_size, lr=students.lr,
                               couplings=students.couplings, teacher_steps=students.teacher_steps, seed=seed,
                               log_every=max(1, students.steps // 4), ckpt_every=students.steps, precision="fp32")
        found[nfe] = folder / f"student_{nfe}"
        distill(found[nfe], run, config, resume="auto", device=device)
    return found


def compare_samplers(problem: Problem, run: Path, *, nfes: Sequence[int], seed: int, device: torch.device,
                     students: dict[int, Path] | None = None) -> dict:
    """Every sampler of the module docstring on the teacher of ``run`` (and its ``students``)."""
    from dinosae.flow import function_evaluations
    from dinosae.io.checkpoint import kept_steps
    from dinosae.models.loading import build_model, load_model, read_model
    from dinosae.train.phema import load_average, posthoc_average

    teacher = load_model(run, kind="dit").to(device).eval()
    prediction = teacher.config.prediction

    def distance(model: torch.nn.Module, method: str = "euler", steps: int = COMPARE_STEPS, **sampler: object) -> float:
        return sampled_distance(model, problem, method=method, steps=steps, seed=seed, device=device, **sampler)

    samplers = [_entry("teacher/euler", REFERENCE_STEPS, distance(teacher, steps=REFERENCE_STEPS), REFERENCE_STEPS,
                       reference=True)]
    for method in SOLVERS:
        for budget in nfes:
            steps = steps_within(method, budget, prediction)
            nfe = function_evaluations(method, steps, prediction)
            if nfe <= budget:
                samplers.append(_entry(f"teacher/{method}", nfe, distance(teacher, method, steps), nfe))
    for scale in CFG_SCALES:
        samplers.append(_entry("cfg/euler", COMPARE_STEPS, distance(teacher, cfg_scale=scale), 2 * COMPARE_STEPS,
                               cfg=scale))
    guide_step = kept_steps(run)[0]  # the weakest kept checkpoint: a quarter of the training
    guide = load_model(f"{run}@{guide_step}", kind="dit").to(device).eval()
    for weight in AUTOGUIDANCE_WEIGHTS:
        samplers.append(_entry("autoguidance/euler", COMPARE_STEPS, distance(teacher, guide=guide, guidance=weight),
                               2 * COMPARE_STEPS, guidance=weight, guide_step=guide_step))
    sweep = []
    for sigma_rel in SIGMA_RELS:
        averaged = load_average(copy.deepcopy(teacher), posthoc_average(run, sigma_rel))
        sweep.append({"sigma_rel": sigma_rel, "distance": distance(averaged)})
    # The fixed EMA at COMPARE_STEPS Euler steps is the teacher, already sampled when the NFEs include it.
    fixed = next((e["distance"] for e in samplers if e["name"] == "teacher/euler" and e["nfe"] == COMPARE_STEPS),
                 None)
    fixed = distance(teacher) if fixed is None else fixed
    raw = distance(load_model(run, kind="dit", use_ema=False).to(device).eval())
    samplers += [_entry(f"phema/{row['sigma_rel']:g}", COMPARE_STEPS, row["distance"], COMPARE_STEPS) for row in sweep]
    samplers += [_entry("ema/fixed", COMPARE_STEPS, fixed, COMPARE_STEPS), _entry("raw", COMPARE_STEPS, raw,
                                                                                   COMPARE_STEPS)]
    for nfe, path in sorted((students or {}).items()):
        record = read_model(path, kind="dit")
        student = build_model(record).to(device).eval()
        distilled = record.meta["distilled"]
        samplers.append(_entry(f"distilled/{nfe}", nfe, distance(student, distilled["method"], nfe,
                                                                 shift=distilled["shift"]), nfe))
    best = min(sweep, key=lambda row: row["distance"])
    return {"floor": problem.floor, "reference": samplers[0]["distance"], "samplers": samplers,
            "phema": {"sweep": sweep, "best": best, "default": next(r for r in sweep if r["sigma_rel"] == 0.10),
                      "fixed_ema": fixed, "raw": raw, "steps": COMPARE_STEPS},
            "autoguidance": {"guide_step": guide_step}}


def ablate_sampling(out_dir: str | os.PathLike, *, latents: str | os.PathLike | None = None, seed: int = 0,
                    settings: TeacherSettings = TeacherSettings(),
                    students: StudentSettings | None = StudentSettings(), nfes: Sequence[int] = NFES,
                    components: int = 8, classes: int | None = None, tokens: int = 4, dim: int = 32,
                    kappa: float = 400.0, eval_samples: int = 2048, device: str | None = "cpu") -> dict:
    """Train the teacher on the vMF mixture (and on a latent cache), distill its ``students`` (None: none), and
    compare every sampler; writes
    ``OUT/metrics.json`` and ``OUT/plot_<problem>.png``. Returns ``{"settings", "vmf": {...}, "latents": ...}``,
    each problem's ``{"floor", "reference", "samplers", "phema", "autoguidance"}``; the vMF one's ``floor`` and
    ``samplers`` are also at the top level.

    Example:
        >>> result = ablate_sampling("runs/ablate-sampling", seed=0)  # doctest: +SKIP
        >>> min(result["samplers"], key=lambda s: s["distance"])["name"]  # doctest: +SKIP
    """
    from dinosae.runtime import pick_device

    if not nfes or min(nfes) < 1:
        raise ValueError(f"nfes must be a non-empty list of counts >= 1, got {list(nfes)}")
    torch_device = pick_device(device)
    out = Path(out_dir)
    problems = [vmf_problem(components=components, classes=classes, tokens=tokens, dim=dim, kappa=kappa,
                            heldout=eval_samples, seed=seed)]
    if latents is not None:
        problems.append(latent_problem(latents, seed=seed))
    result: dict = {"settings": {**settings.__dict__, "seed": seed, "nfes": list(nfes), "device": str(torch_device),
                                 "compare_steps": COMPARE_STEPS, "reference_steps": REFERENCE_STEPS,
                                 "students": None if students is None else students.__dict__}}
    for problem in problems:
        start = time.perf_counter()
        folder = out / problem.name
        run = train_teacher(problem, folder, settings, seed, str(torch_device))
        distilled = None if students is None else distill_students(run, folder, students, seed, str(torch_device))
        result[problem.name] = {**compare_samplers(problem, run, nfes=nfes, seed=seed, device=torch_device,
                                                   students=distilled),
                                "problem": problem.info, "seconds": time.perf_counter() - start}
        plot_samplers(out / f"plot_{problem.name}.png", result[problem.name], problem.name)
    result["floor"], result["samplers"] = result["vmf"]["floor"], result["vmf"]["samplers"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def plot_samplers(path: Path, result: dict, title: str) -> Path:
    """Distance against NFE: a line per solver, a point per guided sampler and per EMA, the floor."""
    from dinosae.evaluation.plots import line_plot

    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in result["samplers"]:
        if entry.get("reference"):
            continue
        family = entry["name"].split("/")[0]
        label = {"phema": "phema (sweep)", "distilled": "distilled students"}.get(family, entry["name"])
        xs, ys = series.setdefault(label, ([], []))
        xs.append(entry["nfe"])
        ys.append(entry["distance"])
    # The reference is a level, not a point: its 250 evaluations would squeeze every sampler into a corner.
    levels = {"teacher/euler 250 (reference)": result["reference"], "floor": result["floor"]}
    return line_plot(path, series, title=f"samplers ({title})", xlabel="function evaluations",
                     ylabel="sliced W2 to held-out data", logy=True, logx=True, levels=levels)


def format_table(result: dict) -> str:
    """The vMF samplers, best first, as a text table."""
    rows = sorted(result["samplers"], key=lambda entry: entry["distance"])
    lines = [f"floor {result['floor']:.5f}", f"{'sampler':<28} {'NFE':>4} {'evals':>6} {'distance':>9}"]
    for entry in rows:
        extra = next((f" {k}={entry[k]:g}" for k in ("cfg", "guidance") if k in entry), "")
        lines.append(f"{entry['name'] + extra:<28} {entry['nfe']:>4} {entry['model_evaluations']:>6} "
                     f"{entry['distance']:>9.5f}")
    return "\n".join(lines)
