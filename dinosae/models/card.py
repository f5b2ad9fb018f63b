"""The model card of an exported folder (Hugging Face's ``README.md``: YAML front matter, then Markdown): what
the model is, how it was trained, on what, and how well, written from what its runs recorded. Nothing is
measured anew."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

def model_card(model: nn.Module, history: list[dict[str, Any]], *, source: dict[str, Any] | None = None,
               last_metrics: dict[str, Any] | None = None,
               evaluations: dict[str, dict[str, Any]] | None = None) -> str:
    """A model card (Hugging Face's ``README.md``: YAML front matter, then Markdown) for ``model``, from the
    records of its training (``history``: each run's ``meta.json``, oldest first, as
    ``dinosae.train.export.stage_history`` returns them), the last logged training step and saved evaluations.

    Example:
        >>> import dinosae
        >>> dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
        >>> card = model_card(dit, [{"kind": "dit", "step": 2, "train_config": {"steps": 2, "batch_size": 8}}])
        >>> card.splitlines()[:3], "| hidden size | 128 |" in card
        (['---', 'library_name: dinosae', 'license: unknown'], True)
    """
    autoencoder = model.pretrained_kind == "autoencoder"
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


def _teacher_statement(model: nn.Module, random_teacher: bool) -> str:
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
