"""``dinosae eval recon|fid|probe`` and ``dinosae check magnitude``: metrics of trained models.

The probe and the magnitude check write ``metrics.json`` and a PNG plot into
their output directory, by default ``RUN/analysis/<name>`` of the checkpoint's run.
"""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import (FiniteFloat, ckpt_option, comma_separated, device_option, emit, folder_options,
                                 json_option, metrics_out_option, one_line_errors, teacher_weights_option,
                                 workers_option)


@click.command("recon")
@ckpt_option()
@folder_options
@metrics_out_option
@teacher_weights_option
@device_option
@json_option
@one_line_errors
def eval_recon(ckpt, data, out, batch_size, limit, teacher_weights, device, as_json) -> None:
    """Reconstruction PSNR, SSIM and LPIPS of an autoencoder on a folder."""
    from dinosae.evaluation.reconstruction import reconstruct_folder

    metrics = reconstruct_folder(ckpt, data, None, teacher_weights=teacher_weights, device=device,
                                 batch_size=batch_size, limit=limit)
    emit(metrics, as_json, out)


@click.command("fid")
@click.option("--real", required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder, .npz of uint8 images (arr_0), or .npz of statistics (mu, sigma).")
@click.option("--fake", required=True, type=click.Path(exists=True, path_type=Path), help="Folder or .npz of images.")
@metrics_out_option
@click.option("--batch-size", type=click.IntRange(1), default=50, show_default=True)
@device_option
@json_option
@one_line_errors
def eval_fid(real, fake, out, batch_size, device, as_json) -> None:
    """FID, precision/recall and Inception Score (when its head is available) of generated images."""
    from dinosae.evaluation.generation import generation_metrics
    from dinosae.runtime import pick_device

    emit(generation_metrics(real, fake, device=pick_device(device), batch_size=batch_size), as_json, out)


@click.command("gen")
@click.option("--samples", required=True, type=click.Path(path_type=Path),
              help="samples.npz of `dinosae sample` (arr_0 uint8 (N, H, W, 3), labels).")
@click.option("--ref", "reference", required=True, type=click.Path(path_type=Path),
              help="ADM-layout reference .npz: mu, sigma (pool3), mu_s, sigma_s (spatial) and/or images arr_0, "
                   "e.g. VIRTUAL_imagenet256_labeled.npz.")
@click.option("--num-samples", type=click.IntRange(1), default=None,
              help="Refuse fewer samples than this (50000 for gFID-50K).")
@click.option("--logits-head", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Inception classifier weights (pytorch-fid's) for the Inception Score; without, IS is not "
                   "reported.")
@metrics_out_option
@click.option("--batch-size", type=click.IntRange(1), default=50, show_default=True)
@device_option
@json_option
@one_line_errors
def eval_gen(samples, reference, num_samples, logits_head, out, batch_size, device, as_json) -> None:
    """FID, sFID, IS, precision and recall of samples against a reference batch, with the sampling protocol."""
    from dinosae.evaluation.generation import evaluate_samples
    from dinosae.metrics import InceptionFeatures
    from dinosae.runtime import pick_device

    target = pick_device(device)
    extractor = InceptionFeatures(logits_head=logits_head, validate=False).to(target)
    result = evaluate_samples(samples, reference, num_samples=num_samples, extractor=extractor,
                              batch_size=batch_size, device=target, progress=not as_json)
    emit(result, as_json, out)


# How far above a checkpoint to look for its run's config.json (RUN/checkpoints/step_X).
RUN_DEPTH = 2


def _positive_floats(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    values = comma_separated(float, "numbers")(ctx, param, value)
    if not values or min(values) <= 0:
        raise click.BadParameter(f"expected positive numbers, got {value!r}")
    return values


def analysis_dir(ckpt: Path, name: str) -> Path:
    """``RUN/analysis/NAME``, RUN being the run of ``ckpt`` (else the folder of ``ckpt``).

    Example:
        >>> analysis_dir(Path("/nonexistent/run.safetensors"), "probe").as_posix()
        '/nonexistent/analysis/probe'
    """
    start = ckpt if ckpt.is_dir() else ckpt.parent
    for folder in (start, *start.parents[:RUN_DEPTH]):
        if (folder / "config.json").is_file():
            return folder / "analysis" / name
    return start / "analysis" / name


@click.command("probe")
@ckpt_option()
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="ImageFolder tree, or a root with train/ and heldout/ (or val/, test/) trees.")
@click.option("--test", "test_dir", type=click.Path(path_type=Path), default=None,
              help="Held-out ImageFolder tree with the same classes (default: DATA's held-out split).")
@click.option("--test-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="Share of each class held out when there is no held-out tree.")
@click.option("--max-per-class", type=click.IntRange(1), default=None,
              help="Train the probes on the first N images of each class only.")
@click.option("--weight-decay", type=FiniteFloat(min=0, min_open=True), default=1e-4, show_default=True,
              help="L2 strength of both probes.")
@click.option("--sweep", default="0.0001,0.001,0.01,0.1,1.0", show_default=True,
              callback=_positive_floats, help="Comma-separated L2 strengths of the plotted sweep.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: RUN/analysis/probe.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stratified split.")
@workers_option
@teacher_weights_option
@device_option
@json_option
@one_line_errors
def eval_probe(ckpt, data, test_dir, test_fraction, max_per_class, weight_decay, sweep, batch_size, out, seed,
               num_workers, teacher_weights, device, as_json) -> None:
    """Linear probe on mean-pooled latent tokens against the same probe on the teacher's tokens."""
    from dinosae.evaluation.probe import evaluate_probe

    out = out or analysis_dir(ckpt, "probe")
    result = evaluate_probe(ckpt, data, out, test=test_dir, test_fraction=test_fraction,
                            teacher_weights=teacher_weights, device=device, weight_decay=weight_decay, sweep=sweep,
                            seed=seed, batch_size=batch_size, max_per_class=max_per_class, num_workers=num_workers,
                            progress=True)
    emit(result, as_json)
    if not as_json:
        click.echo(f"wrote {out / 'metrics.json'} and {out / 'probe.png'}")


def _factor_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError as error:
        raise click.BadParameter(f"expected LO,HI, got {value!r}") from error
    if not 0 < low <= high:
        raise click.BadParameter(f"expected 0 < LO <= HI, got {value!r}")
    return low, high


@click.command("magnitude")
@ckpt_option()
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Image folder (of a split root, its held-out tree).")
@click.option("--factors", default="0.1,10", show_default=True, callback=_factor_range,
              help="LO,HI: scale factors are log-uniform in this range.")
@click.option("--per", type=click.Choice(["token", "image"]), default="token", show_default=True,
              help="One random factor per latent token, or one per image.")
@click.option("--points", type=click.IntRange(2), default=9, show_default=True, help="Factors of the plotted sweep.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: RUN/analysis/magnitude.")
@workers_option
@teacher_weights_option
@device_option
@json_option
@one_line_errors
def check_magnitude(ckpt, data, factors, per, points, limit, batch_size, seed, out, num_workers, teacher_weights,
                    device, as_json) -> None:
    """Scale latent magnitudes by random factors before decoding: PSNR with and without the projection."""
    from dinosae.evaluation.magnitude import check_magnitude as run
    from dinosae.evaluation.probe import resolve_splits

    _, heldout = resolve_splits(data)
    out = out or analysis_dir(ckpt, "magnitude")
    result = run(ckpt, heldout or data, out, factors=factors, seed=seed, per=per, points=points,
                 teacher_weights=teacher_weights, device=device, limit=limit, batch_size=batch_size,
                 num_workers=num_workers, progress=True)
    emit(result, as_json)
    if not as_json:
        click.echo(f"wrote {out / 'metrics.json'} and {out / 'magnitude.png'}")
