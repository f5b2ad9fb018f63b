"""Post-hoc EMA (Karras et al. 2024, EDM2): choose the EMA length after training.

A run tracks a few power-function averages of its trainable weights. The
profile of exponent ``gamma`` averages the weights of steps ``1 .. t`` with
density ``(gamma + 1) tau^gamma / t^(gamma + 1)``, which needs one lerp per
step, ``beta_t = (1 - 1/t)^(gamma + 1)``. Its width relative to ``t`` is
``sigma_rel``, with ``sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3))``.

Every ``phema_every`` steps (and at the last step) the run writes the tracked
averages to ``RUN/phema/step_XXXXXXXX.safetensors``. Any other profile, of any
``sigma_rel`` at any snapshot's step, is then a linear combination of the
snapshots: the one closest to it in L2 over the profiles (:func:`coefficients`),
which is exact for a profile that was tracked. ``dinosae ema RUN --sigma-rel S``
writes it as a model folder (``dinosae.train.export``).

Layout::

    RUN/phema/step_00020000.safetensors   "<k>/<name>": profile k's average of weight <name>, float32;
                                          the header's metadata "phema": step and the profiles' sigma_rel
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from dinosae.io.atomic import write_atomic
from dinosae.io.tensor_files import read_header, read_safetensors

__all__ = ["PosthocAverage", "PosthocError", "PowerEMA", "Snapshot", "coefficients", "gamma_of", "load_average",
           "posthoc_average", "power_ema", "read_snapshots",
           "sigma_rel_of", "PHEMA_DIR"]

PHEMA_DIR = "phema"
_NAME = re.compile(r"step_(\d{8})\.safetensors")
# The widest profile (gamma -> 0: a uniform average) and the narrowest that a float64 solve still tells apart.
MAX_SIGMA_REL, MIN_SIGMA_REL = math.sqrt(1 / 12), 1e-3


class PosthocError(ValueError):
    """A run's snapshots cannot give the average asked for."""


def sigma_rel_of(gamma: float) -> float:
    """The relative width of the power profile of exponent ``gamma``.

    Example:
        >>> round(sigma_rel_of(6.937), 4), round(sigma_rel_of(0.0), 4)
        (0.1, 0.2887)
    """
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def gamma_of(sigma_rel: float) -> float:
    """The exponent of the power profile of relative width ``sigma_rel``, in (0, sqrt(1/12)).

    It is the largest root of ``gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s)``, ``s = sigma_rel^-2``.

    Example:
        >>> round(gamma_of(0.05), 3), round(gamma_of(0.10), 3)
        (16.972, 6.937)
        >>> abs(sigma_rel_of(gamma_of(0.07)) - 0.07) < 1e-12
        True
    """
    if not MIN_SIGMA_REL <= sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel must be in [{MIN_SIGMA_REL}, {MAX_SIGMA_REL:.4f}) (the uniform average), "
                         f"got {sigma_rel}")
    s = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


class PowerEMA:
    """Float32 power-function averages of the trainable weights of ``module``, one per ``sigma_rels``.

    ``update`` after each optimizer step. Every ``every``-th step is averaged: the ``n``-th of them weighs
    the current weights by ``1 - beta_n``, which is the same power profile over the steps, sampled; at DiT-XL
    a lerp of both profiles moves about 15 GB, so sampling every 4th step cuts its cost by 4 (BENCHMARKS.md).

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> averages = PowerEMA(layer, (0.05, 0.10))
        >>> averages.update(layer)  # the first update copies the weights
        >>> bool(torch.equal(averages.shadows[0]["weight"], layer.weight.detach()))
        True
    """

    def __init__(self, module: nn.Module, sigma_rels: Sequence[float], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(gamma_of(s) for s in self.sigma_rels)
        self.every, self.updates = every, 0
        self.shadows = [{name: p.detach().float().clone() for name, p in module.named_parameters()
                         if p.requires_grad} for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        if self.updates % self.every:
            return
        samples = self.updates // self.every
        params = dict(module.named_parameters())
        names = list(self.shadows[0]) if self.shadows else []
        current = [params[n].detach().float() for n in names]
        for gamma, shadow in zip(self.gammas, self.shadows):
            beta = (1.0 - 1.0 / samples) ** (gamma + 1.0)
            torch._foreach_lerp_([shadow[n] for n in names], current, 1.0 - beta)

    def state_dict(self) -> dict:
        """What a checkpoint keeps to continue the averages exactly."""
        return {"sigma_rels": list(self.sigma_rels), "updates": self.updates, "every": self.every,
                "shadows": {f"{k}/{name}": value for k, shadow in enumerate(self.shadows)
                            for name, value in shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if [float(s) for s in state["sigma_rels"]] != list(self.sigma_rels):
            raise ValueError(f"the checkpoint tracks post-hoc EMA profiles {state['sigma_rels']}, "
                             f"the run {list(self.sigma_rels)}")
        if int(state.get("every", 1)) != self.every:
            raise ValueError(f"the checkpoint averages every {state.get('every', 1)} steps, the run every {self.every}")
        for k, shadow in enumerate(self.shadows):
            for name, value in shadow.items():
                value.copy_(state["shadows"][f"{k}/{name}"])
        self.updates = int(state["updates"])

    def snapshot(self, run_dir: str | os.PathLike, step: int) -> Path:
        """Write the averages after ``step`` to ``RUN/phema/step_XXXXXXXX.safetensors``, atomically."""
        tensors = {f"{k}/{name}": value.detach().cpu().contiguous() for k, shadow in enumerate(self.shadows)
                   for name, value in shadow.items()}
        # One metadata key: safetensors writes several in a per-process random order, and resumed runs'
        # snapshots should be byte-identical.
        metadata = {"phema": json.dumps({"step": step, "sigma_rels": list(self.sigma_rels)})}
        path = Path(run_dir) / PHEMA_DIR / f"step_{step:08d}.safetensors"
        return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_average(model: nn.Module, average: PosthocAverage) -> nn.Module:
    """Copy ``average``'s weights into ``model``'s parameters of the same names (every name must be one)."""
    params = dict(model.named_parameters())
    unknown = [name for name, value in average.weights.items()
               if name not in params or params[name].shape != value.shape]
    if unknown:
        raise PosthocError(f"{str(average.path)!r} averages weights that the model does not have: {unknown[:3]}")
    with torch.no_grad():
        for name, value in average.weights.items():
            params[name].copy_(value)
    return model


def power_ema(module: nn.Module, config: object) -> PowerEMA | None:
    """The averages a training config asks for (``phema_sigma_rels``, every ``phema_update_every`` steps), or
    None when ``phema_every`` is 0."""
    if not config.phema_every:
        return None
    return PowerEMA(module, config.phema_sigma_rels, config.phema_update_every)


@dataclass(frozen=True)
class Snapshot:
    """One tracked profile saved at one step: its file, the step, its exponent and its index in the file."""

    path: Path
    step: int
    gamma: float
    index: int


def read_snapshots(run_dir: str | os.PathLike, until: int | None = None) -> list[Snapshot]:
    """The profiles a run saved (at steps up to ``until``), oldest first; a one-line error without any."""
    folder = Path(run_dir) / PHEMA_DIR
    found = []
    for path in sorted(folder.glob("step_*.safetensors")) if folder.is_dir() else []:
        match = _NAME.fullmatch(path.name)
        if match is None or (until is not None and int(match.group(1)) > until):
            continue
        header = read_header(path)
        try:
            record = json.loads(header.metadata["phema"])
            step, sigma_rels = int(record["step"]), [float(s) for s in record["sigma_rels"]]
        except (KeyError, ValueError, TypeError):
            raise PosthocError(f"{str(path)!r} is not a post-hoc EMA snapshot (its header lacks step and "
                               "sigma_rels)") from None
        if step != int(match.group(1)) or not header.complete:
            raise PosthocError(f"{str(path)!r} is damaged: its name, header and size disagree")
        found += [Snapshot(path, step, gamma_of(float(s)), k) for k, s in enumerate(sigma_rels)]
    if not found:
        raise PosthocError(f"{str(run_dir)!r} has no post-hoc EMA snapshots{'' if until is None else f' up to step {until}'}"
                           " (train with phema_every > 0)")
    return found


def _inner(t_a: np.ndarray, g_a: np.ndarray, t_b: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """The L2 inner products of power profiles ``(t_a, g_a)`` with ``(t_b, g_b)``: the integral over
    ``[0, min(t_a, t_b)]`` of the product of their densities. In logs: a narrow profile's ``t^(gamma + 1)``
    overflows float64 from gamma ~ 100 at a million steps."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64)[..., None] for v in (t_a, g_a, t_b, g_b))
    t_b, g_b = t_b.T, g_b.T
    log_min = np.log(np.minimum(t_a, t_b))
    return np.exp(np.log((g_a + 1) * (g_b + 1) / (g_a + g_b + 1)) + (g_a + g_b + 1) * log_min
                  - (g_a + 1) * np.log(t_a) - (g_b + 1) * np.log(t_b))


def coefficients(steps: Sequence[int], gammas: Sequence[float], step: int, gamma: float) -> np.ndarray:
    """The weights of the snapshots ``(steps[i], gammas[i])`` whose combination is closest in L2 to the
    profile ``gamma`` at ``step``, in float64; exact for a tracked profile.

    Unlike EDM2's plain least squares, the weights are constrained to sum to 1 (a KKT system), as every
    profile integrates to 1: otherwise the average is the weights scaled by up to a percent or so.

    Example:
        >>> (coefficients([100, 100, 200, 200], [16.97, 6.94, 16.97, 6.94], 200, 6.94).round(6) + 0.0).tolist()
        [0.0, 0.0, 0.0, 1.0]
    """
    t, g = np.asarray(steps, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    n = t.shape[0]
    system = np.ones((n + 1, n + 1))
    system[:n, :n], system[n, n] = _inner(t, g, t, g), 0.0
    target = np.append(_inner(t, g, np.array([float(step)]), np.array([float(gamma)]))[:, 0], 1.0)
    return np.linalg.lstsq(system, target, rcond=None)[0][:n]


@dataclass(frozen=True)
class PosthocAverage:
    """Trainable weights averaged with the profile ``sigma_rel`` at ``step``, solved from the snapshots in
    ``path`` with ``coefficients`` (one per tracked profile of each snapshot, oldest first)."""

    weights: dict[str, torch.Tensor]
    sigma_rel: float
    step: int
    coefficients: list[float]
    path: Path


def posthoc_average(run_dir: str | os.PathLike, sigma_rel: float, step: int | None = None) -> PosthocAverage:
    """The trainable weights averaged with the profile ``sigma_rel`` at ``step`` (default the last snapshot's),
    from the run's snapshots up to that step; float32, accumulated in float64.

    Example:
        >>> import tempfile
        >>> run, layer = tempfile.mkdtemp(), torch.nn.Linear(2, 2)
        >>> averages = PowerEMA(layer, (0.05, 0.10))
        >>> for _ in range(3):
        ...     averages.update(layer)
        >>> _ = averages.snapshot(run, 3)
        >>> bool(torch.allclose(posthoc_average(run, 0.10).weights["weight"], averages.shadows[1]["weight"]))
        True
    """
    snapshots = read_snapshots(run_dir, step)
    last = max(s.step for s in snapshots)
    if step is not None and step != last:
        raise PosthocError(f"{str(run_dir)!r} has no snapshot at step {step} (the latest before it is {last})")
    try:
        gamma = gamma_of(sigma_rel)
    except ValueError as error:
        raise PosthocError(str(error)) from None
    weights = coefficients([s.step for s in snapshots], [s.gamma for s in snapshots], last, gamma)
    total: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[tuple[Snapshot, float]]] = {}
    for snapshot, weight in zip(snapshots, weights):
        by_file.setdefault(snapshot.path, []).append((snapshot, float(weight)))
    for path, members in by_file.items():
        tensors = read_safetensors(path)
        for snapshot, weight in members:
            prefix = f"{snapshot.index}/"
            for key, value in tensors.items():
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    term = value.double() * weight
                    total[name] = total[name] + term if name in total else term
    return PosthocAverage({name: value.float() for name, value in total.items()}, sigma_rel, last,
                          [float(w) for w in weights], Path(run_dir) / PHEMA_DIR)
