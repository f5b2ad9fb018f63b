"""``dinosae ablate path``: RFM against Euclidean flow matching at the same budget (attach under ``ablate``)."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.commands.common import device_option, emit, json_option, one_line_errors


@click.command("path")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-path"),
              show_default=True, help="Receives metrics.json, path_vmf.png and path_latents.png.")
@click.option("--latents", type=click.Path(path_type=Path), default=None,
              help="Latent cache of `dinosae encode`: also compare the paths on real latents.")
@click.option("--preset", type=click.Choice(["tiny", "S", "B", "L", "XL"]), default="tiny", show_default=True)
@click.option("--steps", type=click.IntRange(1), default=400, show_default=True, help="Training steps of each path.")
@click.option("--eval-every", type=click.IntRange(1), default=25, show_default=True,
              help="Measure the distance every N steps.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--sample-steps", type=click.IntRange(1), default=20, show_default=True,
              help="Euler steps of the sampler at each evaluation.")
@click.option("--eval-samples", type=click.IntRange(2), default=2048, show_default=True,
              help="Size of the vMF held-out set (and of each model's sample).")
@click.option("--heldout-fraction", type=click.FloatRange(0, 0.5, min_open=True), default=0.25, show_default=True,
              help="Share of the latents held out for the distance.")
@click.option("--max-latents", type=click.IntRange(4), default=4096, show_default=True,
              help="Use at most N latents of the cache (a random subset).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@json_option
@one_line_errors
def ablate_path(out, latents, preset, steps, eval_every, batch_size, lr, sample_steps, eval_samples,
                heldout_fraction, max_latents, seed, device, as_json) -> None:
    """RFM against Euclidean flow matching: sliced W2 over training on a vMF mixture (and real latents)."""
    from dinosae.ablations.path import ablate_path as run, format_summary

    result = run(out, latents=latents, steps=steps, eval_every=eval_every, batch_size=batch_size, lr=lr,
                 preset=preset, sample_steps=sample_steps, eval_samples=eval_samples,
                 heldout_fraction=heldout_fraction, max_latents=max_latents, seed=seed, device=device,
                 progress=True)
    if as_json:
        emit(result, as_json)
    else:
        click.echo(format_summary(result))
        click.echo(f"wrote {out / 'metrics.json'} and the plots in {out}")
