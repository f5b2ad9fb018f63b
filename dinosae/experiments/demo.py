"""``dinosae demo``: the whole pipeline on real photos, on a CPU, in minutes.

Builds a dataset from the photographs shipped in scikit-image (or takes a
folder), trains the autoencoder through its four stages (measuring each on
photos it never saw), encodes the images,
trains a DiT with Riemannian flow matching on the latents, samples, evaluates,
and writes ``OUT/report.html`` with image grids, loss curves and a metrics table.
The defaults fit a CPU; the options scale the same command up for a GPU.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import make_grid, save_image

import sphere_ops
from dinosae.config import AE_PRESETS, AETrainConfig, DiTTrainConfig, preset
from dinosae.data.images import ImageDataset
from dinosae.data.photos import TRAIN_PHOTOS, UNSEEN_PHOTOS, write_photo_dataset
from dinosae.evaluation.generation import generation_metrics
from dinosae.evaluation.pca_baseline import pca_baseline
from dinosae.evaluation.plots import line_plot
from dinosae.evaluation.reconstruction import reconstruction_metrics
from dinosae.pipelines.sample import best_sampler, class_labels, generate_images, generate_latents, write_samples
from dinosae.io.atomic import write_atomic, write_json
from dinosae.data.latents import LatentCache
from dinosae.models.loading import build_model, load_model, read_model
from dinosae.metrics import LPIPS, sliced_wasserstein
from dinosae.pipelines.encode import encode_folder
from dinosae.runtime import pick_device
from dinosae.train.autoencoder import train_autoencoder
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.runlog import read_metrics

# Pixels per token side: every preset's stem and ViT give one token per 16x16 pixels.
PATCH = 16
# Images per split that the linear baseline fits and measures: all of the bundled photos' crops.
BASELINE_IMAGES = 512


@dataclass
class DemoConfig:
    """What ``dinosae demo`` runs; ``quick()`` is the shortened version the tests use.

    Stage 1 carries the autoencoder's training: a high rate with a warm-up and a
    cosine decay, L1 and alignment only (LPIPS's VGG would double its time).
    Stages 2 to 4 fine-tune at rates 30 to 150 times lower, each warming up again
    (a fresh AdamW's first steps move every weight by about its rate), with LPIPS at
    ``finetune_lpips``: at full weight it trades 0.4 dB of PSNR for its own
    gain. The adversarial term runs in stage 2 only: the discriminator trains
    from the first step and the decoder sees its gradient from the middle of
    the stage on, the adaptive weight bounded (a few CPU steps barely train
    a discriminator, and an unbounded weight would let its noise drive the
    decoder). On the bundled photos the reconstruction numbers are those of
    ``unseen`` photos, never trained on, and of new crops of the training
    photos (``heldout``). The training crops span ``train_crop_scale`` of
    each photo's shorter side, wider than the held-out crops' (0.35, 0.9):
    more scales of detail per photo, which is what transfers to new photos
    (BENCHMARKS.md, "The demo's autoencoder").
    """

    out: Path = Path("dinosae-demo")
    data: Path | None = None
    heldout: Path | None = None
    preset: str = "tiny"
    image_size: int = 64
    ae_steps: tuple[int, int, int, int] = (1000, 20, 30, 30)
    ae_batch: int = 8
    ae_lr: float = 3e-3
    ae_finetune_lr: tuple[float, float, float] = (5e-5, 1e-4, 2e-5)
    ae_warmup: tuple[int, int] = (30, 5)
    stage1_lpips: bool = False
    finetune_lpips: float = 0.2
    gan_weight: tuple[float, float, float] = (0.5, 0.0, 0.0)
    gan_max_weight: float = 1.0
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
    photos_per_class: int = 96
    heldout_per_class: int = 4
    train_crop_scale: tuple[float, float] = (0.15, 1.0)

    @classmethod
    def quick(cls, out: Path, **overrides: object) -> "DemoConfig":
        return cls(out=out, ae_steps=(4, 1, 1, 1), ae_batch=4, ae_warmup=(1, 0), dit_steps=20, dit_batch=16,
                   samples=8, sample_steps=4, fid=False, photos_per_class=4, heldout_per_class=2, **overrides)

    def stage_config(self, stage: int) -> AETrainConfig:
        """The training settings of autoencoder stage ``stage`` (1 to 4)."""
        steps, first = self.ae_steps[stage - 1], stage == 1
        return AETrainConfig(stage=stage, steps=steps, batch_size=self.ae_batch,
                             lr=self.ae_lr if first else self.ae_finetune_lr[stage - 2],
                             warmup_steps=min(steps - 1, self.ae_warmup[0 if first else 1]), lr_schedule="cosine",
                             lpips_weight=self.finetune_lpips if not first else float(self.stage1_lpips),
                             gan_weight=0.0 if first else self.gan_weight[stage - 2],
                             gan_max_weight=self.gan_max_weight, disc_start=0, gan_start=steps // 2,
                             num_workers=0, log_every=max(1, steps // 30),
                             image_every=steps, ckpt_every=steps, seed=self.seed)


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> dict:
    """Run every step; returns the metrics (also in ``OUT/metrics.json``)."""
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
    folders = _data(config, out, say)
    lap("data")

    ae_config = dataclasses.replace(preset(AE_PRESETS, config.preset), image_size=config.image_size)
    lpips = LPIPS(validate=False).to(device)
    previous, stages = None, []
    for stage in range(1, len(config.ae_steps) + 1):
        train_config = config.stage_config(stage)
        say(f"autoencoder stage {stage}: {train_config.steps} steps")
        run = out / "ae" / f"stage{stage}"
        train_autoencoder(run, folders["train"], ae_config, train_config, init=previous,
                          teacher_weights=config.teacher_weights, device=device)
        previous = run
        lap(f"ae_stage{stage}")
        model = load_model(run, kind="autoencoder", teacher_weights=config.teacher_weights, device=device)
        last = read_metrics(run)[-1]
        stages.append({"stage": stage, "seconds": timings[f"ae_stage{stage}"],
                       **{key: last[key] for key in ("disc_acc_real", "disc_acc_fake") if key in last},
                       **{split: reconstruction_metrics(model, folders[split], lpips=lpips, progress=False,
                                                        num_workers=0)
                          for split in ("heldout", "unseen") if split in folders}})
    _stage_rows(out / "recon" / "stages.png", folders.get("unseen", folders["heldout"]), out / "ae",
                len(config.ae_steps), config, device)
    baseline = _linear_baseline(folders, config.image_size, model.latent_dim, lpips)
    lap("eval_stages")

    say("encoding the training images (and their mirror images)")
    cache = encode_folder(previous, folders["train"], out / "latents", flip=True,
                          teacher_weights=config.teacher_weights, device=device, num_workers=0, progress=False)
    lap("encode")

    say(f"DiT ({config.dit_preset}) with Riemannian flow matching: {config.dit_steps} steps")
    dit_config = dit_config_for(cache, config.dit_preset)
    # A short run: the EMA must warm up, or it would stay near the initial weights.
    dit_train = DiTTrainConfig(steps=config.dit_steps, batch_size=config.dit_batch, lr=config.dit_lr, num_workers=0,
                               log_every=max(1, config.dit_steps // 50), ckpt_every=config.dit_steps, seed=config.seed,
                               ema_warmup=True)
    train_dit(out / "dit", cache, dit_config, dit_train, device=device)
    lap("dit")

    ae = load_model(previous, kind="autoencoder", teacher_weights=config.teacher_weights, device=device)
    metrics = _evaluate(config, out, ae, cache, folders, device, lpips, say, lap)
    metrics["stages"] = stages
    metrics["linear_baseline"] = baseline
    metrics["seconds"] = timings
    metrics["random_teacher"] = config.teacher_weights is None
    write_json(out / "metrics.json", metrics)
    _plots(out, len(config.ae_steps))
    _report(out, config, metrics)
    return metrics


def _data(config: DemoConfig, out: Path, say: Callable[[str], None]) -> dict[str, Path]:
    if config.data is not None:
        return {"train": Path(config.data), "heldout": Path(config.heldout or config.data)}
    say("building the photo dataset from scikit-image's bundled photographs")
    return write_photo_dataset(out / "data", size=config.image_size, train_per_photo=config.photos_per_class,
                               heldout_per_photo=config.heldout_per_class, photos=TRAIN_PHOTOS,
                               unseen=UNSEEN_PHOTOS, seed=config.seed, train_scale=config.train_crop_scale)


def _images(folder: Path, size: int, limit: int = BASELINE_IMAGES) -> torch.Tensor:
    """Up to ``limit`` images of a folder, evenly spaced over its listing (a user's folder may be large)."""
    dataset = ImageDataset(folder, size)
    picks = range(0, len(dataset), -(-len(dataset) // limit))
    return torch.stack([dataset[(i, False)][0] for i in picks])


@torch.no_grad()
def _linear_baseline(folders: dict[str, Path], size: int, latent_dim: int, lpips: LPIPS) -> dict:
    """Patch PCA with the autoencoder's numbers per token (one token per 16x16 pixels), fit on the training
    images (at most ``BASELINE_IMAGES`` of each split): what a linear code of the latent's size reconstructs."""
    splits = {split: _images(folders[split], size) for split in ("heldout", "unseen") if split in folders}
    return {"components": latent_dim, "patch": PATCH,
            **pca_baseline(_images(folders["train"], size), splits, patch=PATCH, components=latent_dim, lpips=lpips)}


@torch.no_grad()
def _stage_rows(path: Path, folder: Path, runs: Path, stages: int, config: DemoConfig, device: str,
                count: int = 8) -> Path:
    """Originals over one row of reconstructions per stage: what each stage does to the same images."""
    dataset = ImageDataset(folder, config.image_size)
    picks = range(0, len(dataset), max(1, len(dataset) // count))[:count]
    images = torch.stack([dataset[(i, False)][0] for i in picks]).to(device)
    rows = [images]
    for stage in range(1, stages + 1):
        model = load_model(runs / f"stage{stage}", kind="autoencoder", teacher_weights=config.teacher_weights,
                           device=device)
        rows.append(model(images).float().clamp(0, 1))
    grid = make_grid(torch.cat(rows).cpu(), nrow=count, padding=2, pad_value=1.0)
    return write_atomic(path, lambda tmp: save_image(grid, tmp, format="png"))


def _evaluate(config: DemoConfig, out: Path, ae, cache: LatentCache, folders: dict[str, Path],
              device: str, lpips: LPIPS, say: Callable[[str], None],
              lap: Callable[[str], None]) -> dict:
    split = "unseen" if "unseen" in folders else "heldout"
    say(f"evaluating reconstructions of {'photos never trained on' if split == 'unseen' else 'held-out images'}")
    recon = reconstruction_metrics(ae, folders[split], out=out / "recon", lpips=lpips, progress=False, num_workers=0)
    lap("eval_recon")

    record = read_model(out / "dit", kind="dit")
    dit = build_model(record).to(device).eval()
    solver = best_sampler(dit, record.meta, config.sample_steps)
    labels = class_labels(config.samples, dit.config.num_classes)
    what = "its distilled" if solver.source == "distilled" else "the best solver of `ablate sampling` at"
    say(f"sampling {config.samples} images with {solver.method}, {solver.steps} steps ({what} "
        f"{config.sample_steps} evaluations), guidance {config.cfg}")
    sampler = dict(steps=solver.steps, method=solver.method, shift=solver.shift, cfg=config.cfg)
    images = generate_images(ae, dit, labels, seed=config.seed, progress=False, **sampler)
    write_samples(out / "samples", images, labels, cache.classes)
    lap("sample")

    # Distances between latent distributions: generated vs data, against noise as the scale.
    generator = torch.Generator().manual_seed(config.seed)
    items = [cache[(i, False)] for i in range(len(cache))]
    data = torch.stack([latent for latent, _ in items])
    data_labels = torch.tensor([label for _, label in items])
    probe_labels = class_labels(min(len(cache), 256), dit.config.num_classes)
    generated = generate_latents(dit, probe_labels.to(device), generator=torch.Generator(device=device).manual_seed(
        config.seed), **sampler).cpu()
    noise = sphere_ops.random_uniform(data.shape[:-1], data.shape[-1], generator=generator)
    metrics = {
        "recon": recon,
        "recon_split": split,
        "sampler": {"method": solver.method, "steps": solver.steps, "source": solver.source, "cfg": config.cfg},
        "latent_sw_generated": float(sliced_wasserstein(generated, data, generator=generator)),
        "latent_sw_noise": float(sliced_wasserstein(noise, data, generator=generator)),
        "latent_sw_class_shuffled": float(_class_mismatch(generated, probe_labels, data, data_labels, generator)),
    }
    if config.fid:
        # Against the held-out crops: the training photos' distribution, at a fraction of Inception's CPU time.
        say("FID / precision / recall of the samples against held-out images (Inception, CPU)")
        metrics["generation"] = generation_metrics(folders["heldout"], out / "samples" / "samples.npz", device=device)
        lap("eval_fid")
    return metrics


def _class_mismatch(generated, labels, data, data_labels, generator) -> float:
    """Mean per-class distance from each class's samples to the data of the *next* class: a scale for conditioning."""
    classes = sorted(set(labels.tolist()))
    distances = []
    for c in classes:
        other = classes[(classes.index(c) + 1) % len(classes)]
        mine, theirs = generated[labels == c], data[data_labels == other]
        if len(mine) and len(theirs):
            distances.append(float(sliced_wasserstein(mine, theirs, generator=generator)))
    return sum(distances) / max(1, len(distances))


def _plots(out: Path, stages: int) -> None:
    """The autoencoder's losses over its stages (one curve each, on one step axis), alignment, and the DiT's."""
    curves: dict[str, dict] = {"L1": {}, "LPIPS": {}}
    offset = 0
    for stage in range(1, stages + 1):
        records = read_metrics(out / "ae" / f"stage{stage}")
        for name, key in (("L1", "l1"), ("LPIPS", "lpips")):
            points = [(offset + r["step"], r[key]) for r in records if key in r]
            if points:
                curves[name][f"stage {stage}"] = tuple(zip(*points))
        offset += records[-1]["step"] if records else 0
    for name, series in curves.items():
        if series:
            line_plot(out / f"ae_{name.lower()}.png", series, title=f"Autoencoder {name} loss, stage by stage",
                      xlabel="training step (stages one after another)", ylabel=f"{name} (training batch)")
    stage1 = read_metrics(out / "ae" / "stage1")
    if stage1 and "align" in stage1[0]:
        line_plot(out / "align_loss.png", {"stage 1": ([r["step"] for r in stage1], [r["align"] for r in stage1])},
                  title="Stage 1 alignment: 1 - cos(student, teacher)", xlabel="training step",
                  ylabel="1 - cosine")
    dit = read_metrics(out / "dit")
    line_plot(out / "dit_loss.png", {"RFM": ([r["step"] for r in dit], [r["loss"] for r in dit])},
              title="DiT Riemannian flow-matching loss", xlabel="training step",
              ylabel="mean |v - u_t|^2 per token")


def _report(out: Path, config: DemoConfig, metrics: dict) -> None:
    recon, split = metrics["recon"], metrics["recon_split"]
    where = "photos never trained on" if split == "unseen" else "held-out images"
    rows = [(f"reconstruction PSNR ({where})", f"{recon['psnr']:.2f} dB"),
            ("reconstruction SSIM", f"{recon['ssim']:.3f}"), ("reconstruction LPIPS", f"{recon['lpips']:.3f}"),
            ("stripe score (1: no directional artifact)", f"{recon['stripe_score']:.2f}"),
            ("latent sliced W2: samples vs data", f"{metrics['latent_sw_generated']:.4f}"),
            ("latent sliced W2: uniform noise vs data", f"{metrics['latent_sw_noise']:.4f}"),
            ("latent sliced W2: samples vs another class", f"{metrics['latent_sw_class_shuffled']:.4f}")]
    for name, value in metrics.get("generation", {}).items():
        rows.append((f"generation {name} (vs held-out images)", f"{value:.4g}"))
    rows += [(f"time: {name}", f"{seconds} s") for name, seconds in metrics["seconds"].items()]
    table = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    stage_rows = "\n".join([*(_stage_row(stage) for stage in metrics["stages"]),
                            _baseline_row(metrics["linear_baseline"])])
    warning = ("<p class='warn'>The DINOv3 teacher is <b>randomly initialized</b> (no --teacher-weights). The "
               "frozen ViT between the stem and the latent is a random function, and stage 1's alignment pulls "
               "the stem towards random features. The autoencoder still learns to reconstruct (the stem and the "
               "decoder train around the random ViT), but its latent carries none of DINOv3's semantics, so the "
               "DiT's samples are textures rather than objects, and none of these numbers are DINO-SAE's. "
               "Pass --teacher-weights FILE for the real thing.</p>"
               if metrics["random_teacher"] else "")
    settings = html.escape(json.dumps({k: str(v) for k, v in asdict(config).items()}, indent=1))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>DINO-SAE demo</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}} td,th{{padding:2px 12px}}
.warn{{background:#fff3cd;padding:8px}} img{{max-width:100%;image-rendering:pixelated}}</style></head><body>
<h1>DINO-SAE demo</h1>{warning}
<h2>Metrics</h2><table>{table}</table>
<h2>The autoencoder, stage by stage</h2>
<table><tr><th>after stage</th><th>held-out crops: PSNR / SSIM / LPIPS / stripes</th>
<th>unseen photos: PSNR / SSIM / LPIPS / stripes</th><th>discriminator right on real / reconstructed</th>
<th>time</th></tr>{stage_rows}</table>
<p>The last row is the best linear code of the latent's size (the top principal components of the training
images' patches): the latent has room for far more than these few CPU minutes teach the small decoder.</p>
<p>Originals (top) and the reconstruction after each stage (one row per stage):</p><img src="recon/stages.png">
<h2>Samples (class-conditional, Riemannian flow matching)</h2><img src="samples/grid.png">
<h2>Training curves</h2><img src="ae_l1.png"><img src="ae_lpips.png"><img src="align_loss.png">
<img src="dit_loss.png">
<h2>Settings</h2><pre>{settings}</pre></body></html>
"""
    write_atomic(out / "report.html", lambda tmp: tmp.write_text(page))


def _baseline_row(baseline: dict) -> str:
    cells = ["-" if split not in baseline else
             f"{baseline[split]['psnr']:.2f} dB / - / {baseline[split]['lpips']:.3f} / -"
             for split in ("heldout", "unseen")]
    return (f"<tr><td>linear baseline: patch PCA, {baseline['components']} numbers per {baseline['patch']}x"
            f"{baseline['patch']} patch, fit on the training images</td><td>{cells[0]}</td><td>{cells[1]}</td>"
            "<td>-</td><td>-</td></tr>")


def _stage_row(stage: dict) -> str:
    cells = []
    for split in ("heldout", "unseen"):
        m = stage.get(split)
        cells.append("-" if m is None else
                     f"{m['psnr']:.2f} dB / {m['ssim']:.3f} / {m['lpips']:.3f} / {m['stripe_score']:.2f}")
    discriminator = (f"{stage['disc_acc_real']:.2f} / {stage['disc_acc_fake']:.2f}"
                     if "disc_acc_real" in stage else "-")
    return (f"<tr><td>{stage['stage']}</td><td>{cells[0]}</td><td>{cells[1]}</td><td>{discriminator}</td>"
            f"<td>{stage['seconds']} s</td></tr>")
