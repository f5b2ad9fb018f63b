"""``dinosae eval probe``, ``dinosae check magnitude`` and ``dinosae ablate align``.

Each writes ``metrics.json`` and a PNG plot into its output directory; for the
first two that defaults to ``RUN/analysis/<name>`` of the checkpoint's run.
"""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.commands.common import device_option, emit, json_option, one_line_errors

# How far above a checkpoint to look for its run's config.json (RUN/checkpoints/step_X).
RUN_DEPTH = 2

ckpt_option = click.option("--ckpt", required=True, type=click.Path(path_type=Path),
                           help="Autoencoder run directory or checkpoint.")
teacher_option = click.option("--teacher-weights", type=click.Path(path_type=Path), default=None,
                              help="DINOv3 weights, when the checkpoint's recorded file has moved.")
workers_option = click.option("--num-workers", type=click.IntRange(0), default=2, show_default=True)


def _positive_floats(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError as error:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from error
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
@ckpt_option
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="ImageFolder tree, or a root with train/ and heldout/ (or val/, test/) trees.")
@click.option("--test", "test_dir", type=click.Path(path_type=Path), default=None,
              help="Held-out ImageFolder tree with the same classes (default: DATA's held-out split).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="Share of each class held out when there is no held-out tree.")
@click.option("--max-per-class", type=click.IntRange(1), default=None,
              help="Train the probes on the first N images of each class only.")
@click.option("--weight-decay", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="L2 strength of both probes.")
@click.option("--sweep", default="0.0001,0.001,0.01,0.1,1.0", show_default=True,
              callback=_positive_floats, help="Comma-separated L2 strengths of the plotted sweep.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: RUN/analysis/probe.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stratified split.")
@workers_option
@teacher_option
@device_option
@json_option
@one_line_errors
def eval_probe(ckpt, data, test_dir, test_fraction, max_per_class, weight_decay, sweep, batch_size, out, seed,
               num_workers, teacher_weights, device, as_json) -> None:
    """Linear probe on mean-pooled latent tokens against the same probe on the teacher's tokens."""
    from dinosae.probe import evaluate_probe

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
@ckpt_option
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
@teacher_option
@device_option
@json_option
@one_line_errors
def check_magnitude(ckpt, data, factors, per, points, limit, batch_size, seed, out, num_workers, teacher_weights,
                    device, as_json) -> None:
    """Scale latent magnitudes by random factors before decoding: PSNR with and without the projection."""
    from dinosae.magnitude import check_magnitude as run
    from dinosae.probe import resolve_splits

    _, heldout = resolve_splits(data)
    out = out or analysis_dir(ckpt, "magnitude")
    result = run(ckpt, heldout or data, out, factors=factors, seed=seed, per=per, points=points,
                 teacher_weights=teacher_weights, device=device, limit=limit, batch_size=batch_size,
                 num_workers=num_workers, progress=True)
    emit(result, as_json)
    if not as_json:
        click.echo(f"wrote {out / 'metrics.json'} and {out / 'magnitude.png'}")


@click.command("align")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-align"),
              show_default=True, help="Holds the two runs, metrics.json and loss.png.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Root with train/ and heldout/ trees, or a training tree with --heldout "
                   "(default: the photo dataset, built in OUT/data).")
@click.option("--heldout", type=click.Path(path_type=Path), default=None, help="Held-out images.")
@click.option("--preset", type=click.Choice(["tiny", "S", "B", "L"]), default="tiny", show_default=True)
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True, help="Steps of each run.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True)
@click.option("--lpips-weight", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--probe-per-class", type=click.IntRange(1), default=None,
              help="Train the probes on the first N images of each class only.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the runs of an interrupted ablation in OUT.")
@click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--teacher-weights", type=click.Path(path_type=Path), default=None,
              help="DINOv3 weights (.pth/.safetensors). Without: a random ViT, and MSE is 2 x cosine.")
@device_option
@json_option
@one_line_errors
def ablate_align(out, data, heldout, preset, steps, batch_size, lr, lpips_weight, probe_per_class, seed, resume,
                 num_workers, teacher_weights, device, as_json) -> None:
    """Cosine against MSE alignment at the same budget: reconstruction, teacher agreement, probes."""
    from dinosae.ablations.align import ablate_align as run, format_table

    result = run(out, data, heldout_dir=heldout, steps=steps, batch_size=batch_size, lr=lr,
                 lpips_weight=lpips_weight, probe_per_class=probe_per_class, preset_name=preset, seed=seed,
                 teacher_weights=teacher_weights, device=device, num_workers=num_workers, resume=resume)
    if as_json:
        emit(result, as_json)
    else:
        click.echo(format_table(result))
        click.echo(f"wrote {out / 'metrics.json'} and {out / 'loss.png'}")
