"""``dinosae export``: a training run's model as a shareable folder (``dinosae.io.pretrained``) with a
model card (``README.md``) that says what the model is, how it was trained, on what, and how well.

The card is written from what the run recorded: each checkpoint's ``meta.json`` (configs, stage, data
identity, the run it started from), ``metrics.jsonl`` (the last logged step) and the evaluations saved in
the run (``RUN/metrics.json``, ``RUN/analysis/*/metrics.json``). Nothing is measured anew.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch import nn

from dinosae.config import read_saved_dit
from dinosae.io.checkpoint import CHECKPOINTS, EMA_FILE, CheckpointError, resolve_checkpoint
from dinosae.io.loading import load_checkpoint_meta, load_model
from dinosae.io.pretrained import is_pretrained, read_pretrained_config, save_pretrained
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.train.runlog import read_metrics

__all__ = ["export_run", "model_card", "stage_history"]

# How far back a chain of --init runs is followed (a cycle or a very long chain stops there).
MAX_HISTORY = 16


def export_run(run: str | os.PathLike, out: str | os.PathLike, *, use_ema: bool = True, include_vit: bool = True,
               teacher_weights: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the model of ``run`` (a run directory, a checkpoint, or an official release file) to ``out`` as
    ``config.json`` + ``model.safetensors`` + ``README.md``; returns ``out``.

    EMA weights by default (``use_ema=False``: the raw ones). ``include_vit=False`` leaves an
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
    if is_pretrained(source):
        target, meta, run_dir = source, read_pretrained_config(source), None
    else:
        target = resolve_checkpoint(source)
        meta = {} if target.is_file() else load_checkpoint_meta(target)
        run_dir = target.parent.parent if target.parent.name == CHECKPOINTS else None
    _check_out(out, force, [source, target] + ([run_dir] if run_dir is not None else []))
    model = load_model(target, teacher_weights=teacher_weights, use_ema=use_ema)
    history = stage_history(meta)
    if isinstance(model, SphericalAutoencoder):
        _carry_teacher(model, history)
    weights = "EMA" if use_ema and (target.is_dir() and (target / EMA_FILE).is_file()) else "raw"
    if is_pretrained(target):
        weights = meta.get("source", {}).get("weights", "as exported")
    provenance = {"path": str(target.resolve()), "step": meta.get("step"), "weights": weights}
    record = {key: meta[key] for key in ("train_config", "classes", "data", "stage") if meta.get(key) is not None}
    if meta.get("kind") == "dit" and "dit_config" in meta:
        # A run from before the flow layer names its geometry in the training config: record today's.
        record["train_config"] = read_saved_dit(meta["dit_config"], meta.get("train_config", {})).train
    record["source"] = provenance
    card = model_card(model, history, source=provenance,
                      last_metrics=(read_metrics(run_dir) or [None])[-1] if run_dir is not None else None,
                      evaluations=_evaluations(run_dir) if run_dir is not None else {})
    return save_pretrained(model, out, include_vit=include_vit, record=record, card=card, overwrite=force)


def _check_out(out: Path, force: bool, sources: list[Path]) -> None:
    """Refuse ``out`` before any model is loaded: a non-empty folder without ``force``, and, even with it, a
    folder whose replacement would delete what is being exported."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{str(out)!r} is not empty; pass --force to replace it")
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
            record = load_checkpoint_meta(target)
        except CheckpointError:
            chain.append({"init": str(init), "missing": True})
            break
        chain.append(record)
        init = record.get("init")
    return chain[::-1]


def _carry_teacher(model: SphericalAutoencoder, history: list[dict[str, Any]]) -> None:
    """A later stage of a run that began from an official release file (without teacher weights) records no
    teacher: its ViT is the release's, with a stand-in patch embedding. Say so in the folder, rather than
    call it random, and keep the teacher refused."""
    if model.teacher_origin is not None:
        return
    for record in history:
        if record.get("teacher_missing") or "official" in record:
            origin = record.get("official") or record.get("init") or "an official release file"
            model.teacher_origin = str(origin)
            if model.encoder.teacher_missing is None:
                model.encoder.teacher_missing = record.get("teacher_missing") or (
                    f"the official file {str(origin)!r} carries no patch embedding for it; pass --teacher-weights FILE")
            return


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


# ---------------------------------------------------------------- the model card


def model_card(model: nn.Module, history: list[dict[str, Any]], *, source: dict[str, Any] | None = None,
               last_metrics: dict[str, Any] | None = None,
               evaluations: dict[str, dict[str, Any]] | None = None) -> str:
    """A model card (Hugging Face's ``README.md``: YAML front matter, then Markdown) for ``model``, from the
    records of its training (``history``, as :func:`stage_history` returns it), the last logged training
    step and saved evaluations.

    Example:
        >>> import dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> card = model_card(dit, [{"kind": "dit", "step": 2, "train_config": {"steps": 2, "batch_size": 8}}])
        >>> card.splitlines()[:3], "| hidden size | 128 |" in card
        (['---', 'library_name: dinosae', 'license: unknown'], True)
    """
    autoencoder = isinstance(model, SphericalAutoencoder)
    random_teacher = autoencoder and model.teacher_origin is None and model.encoder.teacher_missing is None
    tags = ["dinosae", "dino-sae", "pytorch", "safetensors"]
    tags += ["autoencoder", "image-tokenizer", "spherical-latents"] if autoencoder else [
        "diffusion-transformer", "flow-matching", "riemannian-flow-matching", "image-generation"]
    if random_teacher:
        tags.append("random-teacher")
    lines = ["---", "library_name: dinosae", "license: unknown", "tags:", *[f"- {tag}" for tag in tags], "---", ""]
    what = "DINO-SAE spherical autoencoder" if autoencoder else "DiT trained with flow matching on DINO-SAE latents"
    lines += [f"# {what}", ""]
    if source is not None:
        step = f", step {source['step']}" if source.get("step") is not None else ""
        lines += [f"Exported with `dinosae export` from `{source['path']}`{step} ({source['weights']} weights).", ""]
    if autoencoder:
        lines += [_teacher_statement(model, random_teacher), ""]
    lines += ["**License: unknown.** Set `license:` above before sharing. Weights that include a DINOv3 ViT "
              "fall under Meta's DINOv3 license; trained weights also depend on the training data's terms.", ""]
    lines += _usage(model, autoencoder)
    lines += ["## Architecture", "", "| | |", "|---|---|", *_architecture(model, autoencoder), ""]
    lines += ["## Training", "", *_training(history), ""]
    lines += ["## Data", "", *_data(history[-1] if history else {}), ""]
    lines += ["## Metrics", "", *_metrics(last_metrics, evaluations or {}, random_teacher)]
    return "\n".join(lines).rstrip() + "\n"


def _teacher_statement(model: SphericalAutoencoder, random_teacher: bool) -> str:
    if random_teacher:
        family = model.encoder.family
        return (f"**The teacher was random.** This autoencoder was trained without {family} weights: its frozen ViT "
                "is randomly initialized (and included in `model.safetensors`, so the model reloads exactly). Its "
                f"latents carry no {family} semantics, and its numbers are not DINO-SAE's.")
    origin = model.teacher_origin or "an official release file"
    text = f"**Teacher:** not random: the frozen ViT's weights come from `{origin}`."
    if model.encoder.teacher_missing is not None:
        text += (" That file carries no patch embedding, so the teacher itself (alignment, discriminator, probe) "
                 "cannot run without `teacher_weights` / `--teacher-weights FILE`; encoding and decoding can.")
    return text


def _usage(model: nn.Module, autoencoder: bool) -> list[str]:
    name = "SphericalAutoencoder" if autoencoder else "DiT"
    lines = ["## Usage", "", "```python", f"from dinosae.models import {name}", "",
             f'model = {name}.from_pretrained("PATH/OR/OWNER/NAME")  # a local folder or a Hub repo id']
    if autoencoder:
        size, tokens, dim = model.config.image_size, model.encoder.grid_size() ** 2, model.latent_dim
        lines += [f"latents = model.encode(images)  # images (B, 3, {size}, {size}) in [0, 1] -> ({tokens} tokens, "
                  f"{dim} dims), unit vectors", "reconstructions = model.decode(latents)"]
    lines += ["```", "", "Every `dinosae` command that takes a checkpoint takes this folder too "
              f"({'`--ckpt`, `--ae`' if autoencoder else '`--dit`'}).", ""]
    return lines


def _millions(modules: nn.Module | list[nn.Module]) -> str:
    modules = modules if isinstance(modules, list) else [modules]
    return f"{sum(p.numel() for m in modules for p in m.parameters()) / 1e6:.2f} M"


def _architecture(model: nn.Module, autoencoder: bool) -> list[str]:
    config = model.config
    if autoencoder:
        decoder = config.decoder
        vit_depth = len(model.encoder.vit.blocks)
        rows = [("ViT (frozen)", f"`{config.vit}`, {vit_depth} blocks"), ("image size", f"{config.image_size} px"),
                ("latent", f"{model.encoder.grid_size() ** 2} tokens x {model.latent_dim} dims, each on "
                           f"S^{model.latent_dim - 1}"),
                ("stem", f"{config.stem} ({config.stem_norm} norm)"),
                ("decoder widths", ", ".join(map(str, decoder.widths))),
                ("decoder depths", ", ".join(map(str, decoder.depths))),
                ("decoder blocks", ", ".join(decoder.blocks)),
                ("pixels in / out", f"{config.pixel_input} / {config.pixel_output}"),
                ("latent scale", str(config.latent_scale) + (f", decode scale {config.decode_scale}"
                                                             if config.decode_scale is not None else "")),
                ("parameters", f"{_millions(model)}: ViT {_millions(model.encoder.vit)}, stem "
                               f"{_millions(model.encoder.stem)}, decoder {_millions(model.decoder)}")]
    else:
        rows = [("hidden size", config.hidden_size), ("depth", config.depth), ("heads", config.num_heads),
                ("tokens", f"{config.num_tokens} ({config.grid_size} x {config.grid_size}) x {config.in_dim} dims"),
                ("classes", f"{config.num_classes} (+ the null class for guidance)"),
                ("manifold / prediction", f"{config.manifold} / {config.prediction}"),
                ("norm, MLP", f"{config.norm}, {config.mlp}"),
                ("RoPE, QK norm", f"{config.rope}, {config.qk_norm}"),
                ("parameters", _millions(model))]
    return [f"| {name} | {value} |" for name, value in rows]


def _training(history: list[dict[str, Any]]) -> list[str]:
    rows = []
    for record in history:
        if record.get("official"):
            rows.append(f"| official release | | | | `{record['official']}` |")
            continue
        if record.get("missing"):
            rows.append(f"| (not found) | | | | `{record['init']}` |")
            continue
        train = record.get("train_config") or {}
        stage = record.get("stage") or train.get("stage")
        name = f"stage {stage}" if stage is not None else record.get("kind", "run")
        steps = record.get("step", train.get("steps", ""))
        lr = _shown(train["lr"]) if train.get("lr") is not None else "stage default" if train else ""
        init = f"`{record['init']}`" if record.get("init") else ""
        rows.append(f"| {name} | {steps} | {train.get('batch_size', '')} | {lr} | {init} |")
    if not rows:
        return ["Not recorded (the model was not exported from a training run)."]
    lines = ["| stage | steps | batch | lr | started from |", "|---|---|---|---|---|", *rows]
    last = history[-1].get("train_config") or {}
    settings = {k: last[k] for k in ("align", "align_weight", "l1_weight", "lpips_weight", "gan_weight",
                                      "latent_noise", "time_sampler", "shift", "ema_decay", "precision")
                if last.get(k) is not None}
    if settings:
        lines += ["", "Last stage's settings: " + ", ".join(f"`{k}` {_shown(v)}" for k, v in settings.items()) + "."]
    return lines


def _data(record: dict[str, Any]) -> list[str]:
    lines = []
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    identity = f"listing hash `{data.get('listing', '?')}`"
    if record.get("latents"):  # a DiT on a latent cache: the run's data identity is the cache's
        meta = record.get("latent_meta") or {}
        shape = f"{meta['num']} latents of {meta.get('tokens', '?')} x {meta.get('dim', '?')}, " if meta.get("num") else ""
        lines.append(f"- Latents: `{record['latents']}` ({shape}{identity}).")
    elif data:
        lines.append(f"- Images: {data.get('count', '?')} files in `{data.get('path', '?')}` ({identity}).")
    if record.get("latents") is None and record.get("images"):
        lines.append(f"- Latents: encoded on the fly from `{record['images']}`.")
        if record.get("ae_checkpoint"):
            lines.append(f"- Autoencoder: `{record['ae_checkpoint']}`.")
    classes = record.get("classes")
    if classes:
        shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
        lines.append(f"- Classes: {len(classes)} ({shown}).")
    return lines or ["Not recorded."]


def _metrics(last: dict[str, Any] | None, evaluations: dict[str, dict[str, Any]], random_teacher: bool) -> list[str]:
    lines = []
    if last:
        lines += [f"Training, the last logged step ({last.get('step')}):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_shown(v)} |" for k, v in last.items() if k != "step" and _scalar(v)]
        lines.append("")
    for name, values in evaluations.items():
        scalars = {k: v for k, v in values.items() if _scalar(v)}
        if scalars:
            lines += [f"Evaluation `{name}`:", "", "| metric | value |", "|---|---|",
                      *[f"| {k} | {_shown(v)} |" for k, v in scalars.items()], ""]
    if not lines:
        return ["None recorded."]
    if random_teacher:
        lines.append("(Measured with a random teacher: not comparable to DINO-SAE's numbers.)")
    return lines


def _scalar(value: Any) -> bool:
    """Whether a metric fits a table cell: numbers and short strings (not lists of per-class values)."""
    return isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 40)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
