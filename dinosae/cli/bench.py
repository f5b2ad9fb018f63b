"""``dinosae bench kernels``, ``accuracy``, ``memory`` and ``data``: measured against the alternatives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dinosae.cli.options import (FiniteFloat, comma_separated, device_option, json_option, one_line_errors,
                                 recipe_option, report)


@click.group()
def bench() -> None:
    """Microbenchmarks, timed side by side against the alternatives."""


POSITIVE, NAMES = comma_separated(int, "integers", minimum=1), comma_separated(str)


@bench.command("kernels")
@click.option("--op", callback=NAMES, help="Comma-separated ops (default: all).")
@click.option("--rows", default="16384", callback=POSITIVE, show_default=True, help="Comma-separated row counts.")
@click.option("--dim", default="768", callback=POSITIVE, show_default=True, help="Comma-separated D.")
@click.option("--dtype", default="float32", callback=NAMES, show_default=True, help="float32,bfloat16,float16")
@click.option("--mode", default="fwd,fwd+bwd", callback=NAMES, show_default=True)
@click.option("--impl", callback=NAMES, help="Only these implementations (names as printed).")
@device_option
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(1))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON here.")
@json_option
def bench_kernels(op, rows, dim, dtype, mode, impl, device, repeats, out, as_json) -> None:
    """Time every sphere op forward and forward+backward against eager torch,
    torch.compile, geoopt and flow_matching."""
    import torch

    from dinosae.bench import kernels
    from dinosae.bench.sphere_impls import implementations

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available")
    unknown = [o for o in op or [] if o not in kernels.OPS]
    if unknown:
        raise click.BadParameter(f"unknown op {', '.join(unknown)}; choose from {', '.join(kernels.OPS)}", param_hint="--op")
    bad_dtypes = [d for d in dtype if d not in kernels.DTYPES]
    if bad_dtypes:
        raise click.BadParameter(f"unknown dtype {', '.join(bad_dtypes)}", param_hint="--dtype")
    bad_modes = [m for m in mode if m not in kernels.MODES]
    if bad_modes:
        raise click.BadParameter(f"unknown mode {', '.join(bad_modes)}; choose fwd or fwd+bwd", param_hint="--mode")
    known = {name for one in op or kernels.OPS for name in implementations(one, torch.device(device))}
    unknown_impls = sorted(set(impl or ()) - known)
    if unknown_impls:
        raise click.BadParameter(f"unknown implementation {', '.join(unknown_impls)}; choose from "
                                 f"{', '.join(sorted(known))}", param_hint="--impl")
    config = kernels.Config(tuple(op or kernels.OPS), tuple(rows), tuple(dim), tuple(dtype), tuple(mode), impl, device, repeats)

    def progress(cases):
        with click.progressbar(cases, label="timing", file=sys.stderr) as bar:
            yield from bar

    results = kernels.run(config, progress=progress)
    payload = kernels.to_json(results, config)
    if out:
        from dinosae.io.atomic import write_text

        write_text(out, json.dumps(payload, indent=1))
    click.echo(kernels.format_table(results))
    if as_json:
        click.echo(json.dumps(payload))


@bench.command("accuracy")
@click.option("--pairs", default=256, show_default=True, type=click.IntRange(1), help="Random pairs per angle.")
@click.option("--dim", default=768, show_default=True, type=click.IntRange(2))
@json_option
def bench_accuracy(pairs: int, dim: int, as_json: bool) -> None:
    """Worst float32 error of dist and logmap at angles from 0 to pi - 1e-3, for this project's
    backends, the acos formula, geoopt and flow_matching."""
    from dinosae.bench import accuracy

    rows = accuracy.measure(pairs=pairs, dim=dim)
    click.echo(accuracy.format_table(rows))
    if as_json:
        click.echo(json.dumps({"accuracy": accuracy.to_json(rows)}))



@bench.command("memory")
@click.option("--kind", type=click.Choice(["ae", "dit"]), default="ae", show_default=True,
              help="The autoencoder or the DiT.")
@click.option("--preset", default="B", show_default=True, help="ae: tiny, S, B, L; dit: tiny, S, B, L, XL.")
@click.option("--stage", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Autoencoder stage: what trains and which losses run.")
@recipe_option
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: the trainer's on a GPU (bf16 autocast; float32 for the HAE recipe's DiT).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Images (or latents) per GPU.")
@click.option("--grad-checkpoint", is_flag=True, help="Recompute the decoder's stages and LPIPS (ae) or the blocks (dit).")
@click.option("--image-size", type=click.IntRange(16), default=256, show_default=True)
@click.option("--latent-dim", type=click.IntRange(2), default=None,
              help="The DiT's token width (default: 768 for dino-sae, 1024 for hae).")
@click.option("--gpu-memory", type=FiniteFloat(min=0, min_open=True), default=80.0, show_default=True,
              help="GiB per GPU, for the largest batch that fits.")
@click.option("--reserve", type=FiniteFloat(min=0), default=2.0, show_default=True,
              help="GiB set aside for what no tensor shows: CUDA context, library workspaces, NCCL buffers.")
@click.option("--ddp/--no-ddp", default=True, show_default=True, help="Count DDP's gradient buckets.")
@json_option
@one_line_errors
def bench_memory(kind, preset, stage, recipe, precision, batch_size, grad_checkpoint, image_size, latent_dim,
                 gpu_memory, reserve, ddp, as_json) -> None:
    """Predict the memory of a training step per GPU: bytes saved for the backward by module, weights,
    gradients, AdamW, EMA, activations and the largest batch that fits, from the trainer's own step
    traced on fake CPU tensors (no GPU, no weights allocated). Predictions, not GPU measurements."""
    from dinosae.config import preset_names
    from dinosae.config.recipes import DEFAULT_RECIPE

    if preset not in preset_names(kind):
        raise click.BadParameter(f"{kind} has no preset {preset!r}; choose one of {', '.join(preset_names(kind))}",
                                 param_hint="--preset")
    from dinosae.bench import memory

    case = memory.MemoryCase(kind, preset, stage=stage, recipe=recipe or DEFAULT_RECIPE, precision=precision,
                             batch=batch_size, checkpointing=grad_checkpoint, image_size=image_size,
                             latent_dim=latent_dim, ddp=ddp, reserve_gib=reserve)
    click.echo(f"tracing {case.name} on fake CPU tensors ...", err=True)
    prediction = memory.predict(case, gpu_memory_gib=gpu_memory)
    report(memory.to_json(prediction), as_json, memory.format_prediction(prediction))


@bench.command("data")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="An ImageFolder tree.")
@click.option("--image-size", type=click.IntRange(16), default=256, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=4, show_default=True, help="Loader worker processes.")
@click.option("--batches", type=click.IntRange(1), default=20, show_default=True,
              help="Batches timed per loader and repeat, after untimed warm-up batches.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--listing/--no-listing", default=True, show_default=True,
              help="Also time listing the folder against torchvision's make_dataset.")
@device_option
@json_option
@one_line_errors
def bench_data(data, image_size, batch_size, workers, batches, repeats, listing, device, as_json) -> None:
    """Images/s of dinosae's training loader and of torchvision's ImageFolder with PIL on the same folder,
    workers, batch and output size, side by side; and the listing's time and bytes per record."""
    import torch

    from dinosae.bench import data as rates

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    listed = rates.listing_rates(data, repeats=repeats) if listing else None
    loading = rates.loader_rates(data, image_size=image_size, batch_size=batch_size, workers=workers,
                                 batches=batches, repeats=repeats, device=device)
    payload = {"loading": loading.to_json(), **({"listing": listed.to_json()} if listed else {})}
    report(payload, as_json, rates.format_rates(listed, loading))
