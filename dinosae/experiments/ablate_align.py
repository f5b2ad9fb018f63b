"""``dinosae ablate align``: cosine against MSE alignment of the student to the teacher, same budget.

Two stage-1 runs of the same preset, seed, data order and number of steps,
differing only in ``AETrainConfig.align``. The cosine loss (the paper's choice)
constrains only token directions, which is all the spherical latent keeps; MSE
also pulls magnitudes towards the teacher's. Each run is measured on held-out
images: reconstruction (PSNR, SSIM, LPIPS), agreement with the teacher (mean
token cosine similarity, mean norm ratio), and linear probes of the latent and
of the teacher.

Both token sets leave the ViT through its final LayerNorm, so their norms are
nearly fixed and MSE is close to a rescaled cosine loss. With a random teacher
(no ``teacher_weights``) the norm has unit gain and no bias: every token has
norm sqrt(D) and MSE is exactly ``2 (1 - cos)``, so the ablation then compares
alignment weights rather than geometries. Real DINOv3 weights have a learned
gain and bias, which let the magnitudes differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dinosae.config import AE_PRESETS, preset
from dinosae.data.images import DataError
from dinosae.evaluation.probe import probe_summary, resolve_splits, split_features
from dinosae.models.autoencoder import SphericalAutoencoder

ALIGNMENTS = ("cosine", "mse")
# Reported per run, in this order (``format_table``).
COLUMNS = ("psnr", "ssim", "lpips", "teacher_cosine", "norm_ratio", "probe_latent", "probe_teacher", "final_l1")


def ablation_data(out_dir: Path, data_dir: str | os.PathLike | None, heldout_dir: str | os.PathLike | None,
                  image_size: int) -> tuple[Path, Path]:
    """The training and held-out folders: given, found in a split root, or the photo dataset built in ``out_dir``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val"):
        ...     (root / split / "cat").mkdir(parents=True)
        >>> [p.name for p in ablation_data(root / "runs", root, None, 64)]
        ['train', 'val']
    """
    if data_dir is None:
        from dinosae.data.photos import write_photo_dataset

        root = out_dir / "data"
        if (root / "train").is_dir() and (root / "heldout").is_dir():
            return root / "train", root / "heldout"
        folders = write_photo_dataset(root, size=image_size)
        return folders["train"], folders["heldout"]
    train, heldout = resolve_splits(data_dir)
    if heldout_dir is not None:
        heldout = Path(heldout_dir)
    if heldout is None:
        raise DataError(f"{str(data_dir)!r} has no held-out split: give a root with train/ and heldout/ "
                        "(or val/, test/) class folders, or a separate held-out folder")
    return train, heldout


def ablate_align(out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 heldout_dir: str | os.PathLike | None = None, steps: int = 200, batch_size: int = 8,
                 lr: float = 3e-4, lpips_weight: float = 1.0, align_weight: float = 0.5,
                 probe_per_class: int | None = None, preset_name: str = "tiny",
                 seed: int = 0, teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                 num_workers: int = 0, resume: str | None = None, progress: bool = True) -> dict:
    """Train ``OUT/cosine`` and ``OUT/mse``, measure both; write ``OUT/metrics.json`` and ``OUT/loss.png``.

    Returns ``{"cosine": {...}, "mse": {...}, "settings": {...}}`` with the
    ``COLUMNS`` of each run (``final_l1``: the last logged training L1). With no
    ``data_dir``, the photo dataset is written to ``OUT/data``. The learning
    rate defaults to 3e-4 rather than stage 1's official 1e-5, which is tuned
    for batch 256 over 100k+ steps and barely moves a short ablation. ``resume``
    (``"latest"`` or ``"auto"``: the same, since an interrupted ablation may not
    have started every run) continues its runs (their stored settings win,
    except ``steps``) and starts those it had not; without it, existing runs in
    ``OUT`` are an error.
    ``probe_per_class`` limits the probes' training images per class (they
    test on every held-out image).

    Example:
        >>> result = ablate_align("runs/ablate-align", steps=200)  # doctest: +SKIP
        >>> print(format_table(result))  # doctest: +SKIP
    """
    from dinosae.config import AETrainConfig
    from dinosae.evaluation.plots import line_plot
    from dinosae.io.atomic import write_json
    from dinosae.models.loading import load_model
    from dinosae.metrics import LPIPS
    from dinosae.runtime import pick_device
    from dinosae.train.autoencoder import train_autoencoder
    from dinosae.train.runlog import read_metrics

    out_dir = Path(out_dir)
    ae_config = preset(AE_PRESETS, preset_name)
    train_dir, heldout = ablation_data(out_dir, data_dir, heldout_dir, ae_config.image_size)
    settings = {"preset": preset_name, "stage": 1, "steps": steps, "batch_size": batch_size, "lr": lr,
                "align_weight": align_weight, "lpips_weight": lpips_weight, "seed": seed,
                "train": str(train_dir), "heldout": str(heldout)}
    runs = {}
    for align in ALIGNMENTS:
        run_dir = out_dir / align
        config = AETrainConfig(stage=1, steps=steps, batch_size=batch_size, lr=lr, align=align,
                               align_weight=align_weight, lpips_weight=lpips_weight, seed=seed,
                               num_workers=num_workers, log_every=max(1, steps // 100), image_every=steps,
                               ckpt_every=steps)
        train_autoencoder(run_dir, train_dir, ae_config, config, resume="auto" if resume else None,
                          teacher_weights=teacher_weights, device=device)
        runs[align] = run_dir

    torch_device = pick_device(device)
    lpips = LPIPS().to(torch_device)
    result: dict = {"settings": settings}
    curves = {}
    for align, run_dir in runs.items():
        model = load_model(run_dir, kind="autoencoder", teacher_weights=teacher_weights, device=torch_device)
        result[align] = measure_run(model, train_dir, heldout, lpips, probe_per_class=probe_per_class,
                                    num_workers=num_workers, progress=progress)
        history = read_metrics(run_dir)
        curves[align] = ([r["step"] for r in history], [r["l1"] for r in history])
        result[align]["final_l1"] = curves[align][1][-1]
    line_plot(out_dir / "loss.png", curves, title=f"stage 1, {preset_name}: cosine vs MSE alignment",
              xlabel="step", ylabel="training L1", logy=True)
    write_json(out_dir / "metrics.json", result)
    return result


def measure_run(model: SphericalAutoencoder, train_dir: str | os.PathLike, heldout: str | os.PathLike,
                lpips: torch.nn.Module, *, probe_per_class: int | None = None, num_workers: int = 0,
                progress: bool = False) -> dict[str, float]:
    """Held-out reconstruction, agreement with the teacher, and both probes of one trained model.

    Example:
        >>> measure_run(load_model("runs/ablate-align/mse", kind="autoencoder"), "data/train", "data/heldout",
        ...             LPIPS())  # doctest: +SKIP
        {'psnr': 17.9, 'ssim': 0.41, 'lpips': 0.52, 'teacher_cosine': 0.93, 'norm_ratio': 1.0, ...}
    """
    from dinosae.evaluation.reconstruction import reconstruction_metrics

    recon = reconstruction_metrics(model, heldout, lpips=lpips, progress=progress, num_workers=num_workers)
    probe = probe_summary(*split_features(model, train_dir, heldout, max_per_class=probe_per_class,
                                          num_workers=num_workers))
    return {"psnr": recon["psnr"], "ssim": recon["ssim"], "lpips": recon["lpips"],
            **{k: probe[k] for k in ("teacher_cosine", "norm_ratio", "probe_latent", "probe_teacher")}}


def format_table(result: dict) -> str:
    """The ablation as a text table, one row per alignment loss.

    Example:
        >>> row = dict.fromkeys(COLUMNS, 0.5)
        >>> print(format_table({"cosine": row, "mse": row}).splitlines()[0].split()[:3])
        ['align', 'psnr', 'ssim']
    """
    lines = ["align   " + " ".join(f"{c:>14}" for c in COLUMNS)]
    for align in ALIGNMENTS:
        lines.append(f"{align:<8}" + " ".join(f"{result[align][c]:>14.4f}" for c in COLUMNS))
    return "\n".join(lines)
