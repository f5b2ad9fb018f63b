"""``dinosae demo``: the whole pipeline on real photos, on a CPU, in minutes.

Builds a dataset from the photographs shipped in scikit-image (or takes a
folder), trains the autoencoder through its four stages, encodes the images,
trains a DiT with Riemannian flow matching on the latents, samples, evaluates,
and writes ``OUT/report.html`` with image grids, loss curves and a metrics table.
The defaults fit a CPU; the options scale the same command up for a GPU.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from dinosae.config import AE_PRESETS, preset
from dinosae.io.latents import LatentCache
from dinosae.evaluation.plots import line_plot
from dinosae.io.atomic import write_json
from dinosae.train.runlog import read_metrics


@dataclass
class DemoConfig:
    """What ``dinosae demo`` runs; ``quick()`` is the shortened version the tests use."""

    out: Path = Path("dinosae-demo")
    data: Path | None = None
    heldout: Path | None = None
    preset: str = "tiny"
    image_size: int = 64
    ae_steps: tuple[int, int, int, int] = (150, 10, 10, 10)
    ae_batch: int = 8
    ae_lr: float = 3e-4
    stage1_lpips: bool = False
    dit_preset: str = "tiny"
    dit_steps: int = 800
    dit_batch: int = 64
    dit_lr: float = 3e-4
    samples: int = 32
    sample_steps: int = 30
    cfg: float = 2.0
    fid: bool = True
    teacher_weights: Path | None = None
    device: str | None = None
    seed: int = 0
    photos_per_class: int = 32

    @classmethod
    def quick(cls, out: Path, **overrides: object) -> "DemoConfig":
        return cls(out=out, ae_steps=(4, 1, 1, 1), ae_batch=4, dit_steps=20, dit_batch=16, samples=8,
                   sample_steps=4, fid=False, photos_per_class=4, **overrides)


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> dict:
    """Run every step; returns the metrics (also in ``OUT/metrics.json``)."""
    from dinosae.pipelines.encode import encode_folder
    from dinosae.io.loading import load_autoencoder
    from dinosae.train.autoencoder import train_autoencoder
    from dinosae.config import AETrainConfig
    from dinosae.train.dit import dit_config_for, train_dit
    from dinosae.config import DiTTrainConfig
    from dinosae.runtime import pick_device

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = str(pick_device(config.device))
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    if config.teacher_weights is None:
        say("note: no --teacher-weights, so the DINOv3 teacher is randomly initialized; the pipeline runs "
            "end to end, but alignment and the numbers below do not reflect DINOv3")
    train_dir, heldout_dir = _data(config, out, say)
    lap("data")

    ae_config = preset(AE_PRESETS, config.preset)
    ae_config.image_size = config.image_size
    previous = None
    for stage, steps in enumerate(config.ae_steps, start=1):
        say(f"autoencoder stage {stage}: {steps} steps")
        lpips_weight = 1.0 if stage > 1 or config.stage1_lpips else 0.0
        train_config = AETrainConfig(stage=stage, steps=steps, batch_size=config.ae_batch, lr=config.ae_lr,
                                     lpips_weight=lpips_weight, num_workers=0, log_every=max(1, steps // 30),
                                     image_every=steps, ckpt_every=steps, seed=config.seed)
        run = out / "ae" / f"stage{stage}"
        train_autoencoder(run, train_dir, ae_config, train_config, init=previous,
                          teacher_weights=config.teacher_weights, device=device)
        previous = run
        lap(f"ae_stage{stage}")

    say("encoding the training images (and their mirror images)")
    cache = encode_folder(previous, train_dir, out / "latents", flip=True, teacher_weights=config.teacher_weights,
                          device=device, num_workers=0, progress=False)
    lap("encode")

    say(f"DiT ({config.dit_preset}) with Riemannian flow matching: {config.dit_steps} steps")
    dit_config = dit_config_for(cache, config.dit_preset)
    dit_train = DiTTrainConfig(steps=config.dit_steps, batch_size=config.dit_batch, lr=config.dit_lr, num_workers=0,
                               log_every=max(1, config.dit_steps // 50), ckpt_every=config.dit_steps, seed=config.seed)
    train_dit(out / "dit", out / "latents", dit_config, dit_train, device=device)
    lap("dit")

    ae = load_autoencoder(previous, teacher_weights=config.teacher_weights, device=device)
    metrics = _evaluate(config, out, ae, cache, heldout_dir, train_dir, dit_train, device, say, lap)
    metrics["seconds"] = timings
    metrics["random_teacher"] = config.teacher_weights is None
    write_json(out / "metrics.json", metrics)
    _plots(out, len(config.ae_steps))
    _report(out, config, metrics)
    return metrics


def _data(config: DemoConfig, out: Path, say: Callable[[str], None]) -> tuple[Path, Path]:
    if config.data is not None:
        return Path(config.data), Path(config.heldout or config.data)
    from dinosae.data.photos import write_photo_dataset

    say("building the photo dataset from scikit-image's bundled photographs")
    folders = write_photo_dataset(out / "data", size=config.image_size, train_per_photo=config.photos_per_class,
                                  heldout_per_photo=max(2, config.photos_per_class // 8), seed=config.seed)
    return folders["train"], folders["heldout"]


def _evaluate(config, out, ae, cache: LatentCache, heldout_dir, train_dir, dit_train, device, say, lap) -> dict:
    import sphere_ops
    from dinosae.evaluation.reconstruction import reconstruction_metrics
    from dinosae.generation.samples import class_labels, generate_images, generate_latents, write_samples
    from dinosae.metrics import sliced_wasserstein
    from dinosae.io.loading import load_dit

    say("evaluating reconstructions on held-out images")
    recon = reconstruction_metrics(ae, heldout_dir, out=out / "recon", progress=False, num_workers=0)
    lap("eval_recon")

    dit = load_dit(out / "dit", device=device)
    shift = dit_train.resolved_shift(cache.tokens, cache.dim)
    labels = class_labels(config.samples, dit.config.num_classes)
    say(f"sampling {config.samples} images ({config.sample_steps} Euler steps, guidance {config.cfg})")
    images = generate_images(ae, dit, labels, seed=config.seed, steps=config.sample_steps, cfg=config.cfg,
                             shift=shift, progress=False)
    write_samples(out / "samples", images, labels, cache.classes)
    lap("sample")

    # Distances between latent distributions: generated vs data, against noise as the scale.
    generator = torch.Generator().manual_seed(config.seed)
    items = [cache[(i, False)] for i in range(len(cache))]
    data = torch.stack([latent for latent, _ in items])
    data_labels = torch.tensor([label for _, label in items])
    probe_labels = class_labels(min(len(cache), 256), dit.config.num_classes)
    generated = generate_latents(dit, probe_labels.to(device), steps=config.sample_steps, cfg=config.cfg,
                                 shift=shift, generator=torch.Generator(device=device).manual_seed(config.seed)).cpu()
    noise = sphere_ops.random_uniform(data.shape[:-1], data.shape[-1], generator=generator)
    metrics = {
        "recon": recon,
        "latent_sw_generated": float(sliced_wasserstein(generated, data, generator=generator)),
        "latent_sw_noise": float(sliced_wasserstein(noise, data, generator=generator)),
        "latent_sw_class_shuffled": float(_class_mismatch(generated, probe_labels, data, data_labels, generator)),
    }
    if config.fid:
        from dinosae.evaluation.generation import generation_metrics

        say("FID / precision / recall of the samples against the training images (Inception, CPU)")
        metrics["generation"] = generation_metrics(train_dir, out / "samples" / "samples.npz", device=device)
        lap("eval_fid")
    return metrics


def _class_mismatch(generated, labels, data, data_labels, generator) -> float:
    """Mean per-class distance from each class's samples to the data of the *next* class: a scale for conditioning."""
    from dinosae.metrics import sliced_wasserstein

    classes = sorted(set(labels.tolist()))
    distances = []
    for c in classes:
        other = classes[(classes.index(c) + 1) % len(classes)]
        mine, theirs = generated[labels == c], data[data_labels == other]
        if len(mine) and len(theirs):
            distances.append(float(sliced_wasserstein(mine, theirs, generator=generator)))
    return sum(distances) / max(1, len(distances))


def _plots(out: Path, stages: int) -> None:
    series, offset = {}, 0
    for stage in range(1, stages + 1):
        records = read_metrics(out / "ae" / f"stage{stage}")
        if records:
            series[f"stage {stage} L1"] = ([offset + r["step"] for r in records], [r["l1"] for r in records])
            offset += records[-1]["step"]
    line_plot(out / "ae_loss.png", series, title="Autoencoder L1 (all stages)", xlabel="step", ylabel="L1")
    align = {"stage 1": ([r["step"] for r in read_metrics(out / "ae" / "stage1")],
                         [r["align"] for r in read_metrics(out / "ae" / "stage1")])}
    line_plot(out / "align_loss.png", align, title="1 - cos(student, teacher)", xlabel="step", ylabel="loss")
    dit = read_metrics(out / "dit")
    line_plot(out / "dit_loss.png", {"RFM": ([r["step"] for r in dit], [r["loss"] for r in dit])},
              title="DiT Riemannian flow-matching loss", xlabel="step", ylabel="loss")


def _report(out: Path, config: DemoConfig, metrics: dict) -> None:
    rows = []
    recon = metrics["recon"]
    rows += [("reconstruction PSNR (held-out)", f"{recon['psnr']:.2f} dB"),
             ("reconstruction SSIM", f"{recon['ssim']:.3f}"), ("reconstruction LPIPS", f"{recon['lpips']:.3f}"),
             ("latent sliced W2: samples vs data", f"{metrics['latent_sw_generated']:.4f}"),
             ("latent sliced W2: uniform noise vs data", f"{metrics['latent_sw_noise']:.4f}"),
             ("latent sliced W2: samples vs another class", f"{metrics['latent_sw_class_shuffled']:.4f}")]
    for name, value in metrics.get("generation", {}).items():
        rows.append((f"generation {name} (vs training images)", f"{value:.4g}"))
    rows += [(f"time: {name}", f"{seconds} s") for name, seconds in metrics["seconds"].items()]
    table = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    warning = ("<p class='warn'>The DINOv3 teacher is <b>randomly initialized</b> (no --teacher-weights): the "
               "pipeline runs end to end, but these numbers say nothing about DINO-SAE's quality.</p>"
               if metrics["random_teacher"] else "")
    settings = html.escape(json.dumps({k: str(v) for k, v in asdict(config).items()}, indent=1))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>DINO-SAE demo</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}} td{{padding:2px 12px}}
.warn{{background:#fff3cd;padding:8px}} img{{max-width:100%}}</style></head><body>
<h1>DINO-SAE demo</h1>{warning}
<h2>Metrics</h2><table>{table}</table>
<h2>Reconstructions (held-out: originals above, reconstructions below)</h2><img src="recon/grid.png">
<h2>Samples (class-conditional, Riemannian flow matching)</h2><img src="samples/grid.png">
<h2>Training curves</h2><img src="ae_loss.png"><img src="align_loss.png"><img src="dit_loss.png">
<h2>Settings</h2><pre>{settings}</pre></body></html>
"""
    (out / "report.html").write_text(page)
