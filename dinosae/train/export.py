"""``dinosae export``: a training run's model as a shareable folder (``dinosae.models.folder``) with a
model card (``README.md``, ``dinosae.models.card``) that says what the model is, how it was trained, on what,
and how well.

The card is written from what the run recorded: each checkpoint's ``meta.json`` (configs, stage, data
identity, the run it started from), ``metrics.jsonl`` (the last logged step) and the evaluations saved in
the run (``RUN/metrics.json``, ``RUN/analysis/*/metrics.json``). Nothing is measured anew.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dinosae.io.checkpoint import CHECKPOINTS, EMA_FILE, CheckpointError, read_checkpoint_meta, resolve_checkpoint
from dinosae.io.lock import LOCK_NAME, DirectoryLock
from dinosae.models.card import model_card
from dinosae.models.loading import build_model, read_model
from dinosae.train.phema import PHEMA_DIR, PosthocError, load_average, posthoc_average
from dinosae.train.runlog import read_metrics

__all__ = ["export_run", "stage_history"]

# How far back a chain of --init runs is followed (a cycle or a very long chain stops there).
MAX_HISTORY = 16


def export_run(run: str | os.PathLike, out: str | os.PathLike, *, use_ema: bool = True, include_vit: bool = True,
               teacher_weights: str | os.PathLike | None = None, force: bool = False,
               sigma_rel: float | None = None, phema_step: int | None = None) -> Path:
    """Write the model of ``run`` (a run directory, a checkpoint, or an official release file) to ``out`` as
    ``config.json`` + ``model.safetensors`` + ``README.md``; returns ``out``.

    EMA weights by default (``use_ema=False``: the raw ones); with ``sigma_rel``, the post-hoc EMA of that
    relative width at ``phema_step`` (default the run's last snapshot), solved from the run's snapshots
    (``dinosae.train.phema``). ``include_vit=False`` leaves an
    autoencoder's frozen ViT out (the folder then needs its teacher file); ``teacher_weights`` is the
    file of a run whose recorded one has moved. A non-empty ``out`` is refused unless ``force``.

    Example:
        >>> import tempfile, dinosae
        >>> from dinosae.io.checkpoint import Checkpoint, save_checkpoint
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> run = tempfile.mkdtemp()
        >>> _ = save_checkpoint(run, Checkpoint(step=5, model=dit.state_dict(),
        ...                     meta={"kind": "dit", "dit_config": dinosae.config.to_dict(dit.config)}))
        >>> folder = export_run(run, tempfile.mkdtemp() + "/dit")
        >>> sorted(p.name for p in folder.iterdir()), type(dinosae.load_model(folder)).__name__
        (['README.md', 'config.json', 'model.safetensors'], 'DiT')
    """
    source, out = Path(run), Path(out)
    record = read_model(source, use_ema=use_ema)
    target = record.path
    run_dir = target.parent.parent if not record.released and target.parent.name == CHECKPOINTS else None
    _check_out(out, force, [source, target] + ([run_dir] if run_dir is not None else []))
    if sigma_rel is not None and run_dir is None:
        raise PosthocError(f"post-hoc EMA needs a run directory and its {PHEMA_DIR}/ snapshots, not {str(source)!r}")
    averaged = None if sigma_rel is None else posthoc_average(run_dir, sigma_rel, phema_step)
    model = build_model(record, teacher_weights)
    meta = record.meta
    if record.released:
        weights = meta.get("source", {}).get("weights", "as exported") if "format" in meta else "as released"
    elif averaged is not None:
        weights = f"post-hoc EMA, sigma_rel {sigma_rel:g} at step {averaged.step}"
        load_average(model, averaged)
    else:
        weights = "EMA" if use_ema and (target / EMA_FILE).is_file() else "raw"
    provenance = {"path": str(target.resolve()), "step": meta.get("step"), "weights": weights}
    kept = {key: meta[key] for key in ("train_config", "classes", "data", "stage", "distill_config", "distilled")
            if meta.get(key) is not None}
    card = model_card(model, stage_history(meta), source=provenance,
                      last_metrics=(read_metrics(run_dir) or [None])[-1] if run_dir is not None else None,
                      evaluations=_evaluations(run_dir) if run_dir is not None else {})
    return model.save_pretrained(out, include_vit=include_vit, record={**kept, "source": provenance}, card=card,
                                 overwrite=force)


def _check_out(out: Path, force: bool, sources: list[Path]) -> None:
    """Refuse ``out`` before any model is built: a non-empty folder without ``force``, and, even with it, a
    folder that a live job holds (its lock), or whose replacement would delete what is being exported."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{str(out)!r} is not empty; pass --force to replace it")
        if (out / LOCK_NAME).exists() or (out / LOCK_NAME).is_symlink():
            # --force replaces a folder, never one that a live job writes: its lock says so (or is stale).
            with DirectoryLock(out, "the folder to replace"):
                pass
        resolved = out.resolve()
        for source in sources:
            source = source.resolve()
            if source == resolved or resolved in source.parents:
                raise ValueError(f"{str(out)!r} holds {str(source)!r}, the model being exported; choose another OUT")


def stage_history(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the runs that led to a checkpoint, following each one's ``init``, oldest first (the
    checkpoint's own last). A run that cannot be read any more stays as ``{"init": PATH, "missing": True}``;
    an official release file as ``{"official": PATH}``.

    Example:
        >>> stage_history({"stage": 2, "init": "/nonexistent/s1"})
        [{'init': '/nonexistent/s1', 'missing': True}, {'stage': 2, 'init': '/nonexistent/s1'}]
    """
    chain = [meta]
    seen: set[Path] = set()
    init = meta.get("init")
    while init and len(chain) < MAX_HISTORY:
        try:
            target = resolve_checkpoint(init)
            if target.is_file():
                chain.append({"official": str(init)})
                break
            if target.resolve() in seen:
                break
            seen.add(target.resolve())
            record = read_checkpoint_meta(target)
        except CheckpointError:
            chain.append({"init": str(init), "missing": True})
            break
        chain.append(record)
        init = record.get("init")
    return chain[::-1]


def _evaluations(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics files saved in the run: ``metrics.json`` (``eval recon --out RUN``) and ``analysis/*/``."""
    found = {}
    for path in [run_dir / "metrics.json", *sorted(run_dir.glob("analysis/*/metrics.json"))]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found[path.relative_to(run_dir).as_posix()] = data
    return found
