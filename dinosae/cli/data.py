"""``dinosae data shard``: an image folder written as tar shards for shared filesystems."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import one_line_errors


@click.group()
def data() -> None:
    """Data preparation."""


@data.command("shard")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="ImageFolder tree or flat image folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new folder for the shards; pass it as --data to train ae, encode, eval recon.")
@click.option("--shard-size", type=click.IntRange(1), default=1000, show_default=True, help="Images per shard.")
@one_line_errors
def shard(data_dir, out, shard_size) -> None:
    """Write the images of a folder into WebDataset-layout tar shards (<key>.jpg + <key>.cls), read with one
    positioned read per image and no per-file open or stat."""
    from dinosae.data.tar_shards import TarListing, write_tar_shards

    shards = TarListing(write_tar_shards(data_dir, out, shard_size))
    click.echo(f"{len(shards)} images in {-(-len(shards) // shard_size)} shards in {out}")
