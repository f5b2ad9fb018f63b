"""``dinosae bench kernels`` and ``dinosae bench accuracy``: the sphere ops against the alternatives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dinosae.cli.options import comma_separated, device_option, json_option


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

