"""The ``dinosae`` command line: a click group; each command wires options to library functions.

Commands live in modules by what they work on (``autoencoder``, ``generation``,
``evaluation``, ``experiments``, ``bench``, ``data``, ``export``) and import the library lazily, so
that ``dinosae --help`` and option errors never wait for torch.
"""

from __future__ import annotations

import logging
import sys

import click

from dinosae import __version__
from dinosae.cli import autoencoder, bench, data, evaluation, experiments, export, generation


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dinosae")
def main() -> None:
    """DINO-SAE: spherical autoencoder, Riemannian flow matching, fused sphere kernels."""
    # The library reports what it chose (which weights of a file it loaded, ...) at INFO level.
    logger = logging.getLogger("dinosae")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@main.group()
def train() -> None:
    """Train the autoencoder (ae) or the generator (dit)."""


@main.group("eval")
def evaluate() -> None:
    """Measure: reconstruction (recon), generation (gen, fid), semantics (probe)."""


@main.group()
def check() -> None:
    """Checks of the paper's claims."""


@main.group()
def ablate() -> None:
    """Ablations of the paper's design choices, trained at the same budget."""


train.add_command(autoencoder.train_ae)
train.add_command(generation.train_dit)
main.add_command(autoencoder.reconstruct)
main.add_command(autoencoder.encode)
main.add_command(generation.sample)
main.add_command(generation.distill)
evaluate.add_command(evaluation.eval_recon)
evaluate.add_command(evaluation.eval_fid)
evaluate.add_command(evaluation.eval_gen)
evaluate.add_command(evaluation.eval_probe)
check.add_command(evaluation.check_magnitude)
ablate.add_command(experiments.ablate_align)
ablate.add_command(experiments.ablate_path)
ablate.add_command(experiments.ablate_precision)
ablate.add_command(experiments.ablate_sampling)
main.add_command(experiments.demo)
main.add_command(bench.bench)
main.add_command(data.data)
main.add_command(export.export)
main.add_command(export.ema)
