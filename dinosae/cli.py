"""The ``dinosae`` command line: a click group; each command wires options to library functions."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dinosae")
def main() -> None:
    """DINO-SAE: spherical autoencoder, Riemannian flow matching, fused sphere kernels."""
