"""``dinosae encode``: an image folder to a latent cache (see ``dinosae.io.latents``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dinosae.data.images import FolderBatches, ImageDataset
from dinosae.io.latents import LatentCache, shard_name, write_meta, write_shard
from dinosae.io.loading import load_autoencoder
from dinosae.runtime import barrier, init_distributed, shutdown


def encode_folder(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
                  flip: bool = False, shard_size: int = 1024, batch_size: int = 64,
                  teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                  num_workers: int = 4, progress: bool = True) -> LatentCache:
    """Encode every image of ``data_dir`` with the autoencoder ``ckpt`` into the cache ``out``.

    Complete shards already in ``out`` are kept, so rerunning the command
    resumes. Under ``torchrun`` each rank encodes every ``world_size``-th shard.
    Unreadable images are skipped with a warning; their slots are dropped.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = init_distributed(device)
    try:
        model = load_autoencoder(ckpt, teacher_weights=teacher_weights, device=env.device)
        dataset = ImageDataset(data_dir, model.config.image_size)
        num_shards = -(-len(dataset) // shard_size)
        mine = [i for i in range(num_shards) if i % env.world_size == env.rank
                and not (out / shard_name(i)).is_file()]
        bar = tqdm(total=len(mine), unit="shard", disable=not (progress and env.is_main))
        for shard in mine:
            indices = range(shard * shard_size, min((shard + 1) * shard_size, len(dataset)))
            latents, flipped, labels = _encode_shard(model, dataset, indices, flip, batch_size, num_workers,
                                                     env.device)
            write_shard(out, shard, latents, labels, flipped)
            bar.update(1)
        bar.close()
        barrier(env)
        if env.is_main:
            counts = _shard_counts(out, num_shards)
            write_meta(out, {
                "num": sum(counts), "shard_counts": counts, "tokens": model.encoder.grid_size() ** 2, "dim": model.latent_dim,
                "shard_size": shard_size, "num_shards": num_shards, "flip": flip,
                "classes": dataset.classes, "ae_checkpoint": str(ckpt),
                "image_size": model.config.image_size,
            })
        barrier(env)
    finally:
        shutdown(env)
    return LatentCache(out)


@torch.no_grad()
def _encode_shard(model, dataset: ImageDataset, indices: range, flip: bool, batch_size: int,
                  num_workers: int, device: torch.device):
    dim, tokens = model.latent_dim, model.encoder.grid_size() ** 2
    latents, flipped, labels = [torch.empty(0, tokens, dim)], [torch.empty(0, tokens, dim)], [torch.empty(0, dtype=torch.long)]
    for batch in FolderBatches(dataset, indices, batch_size, num_workers):
        images = batch.images.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents.append(model.encode(images).float().cpu())
            if flip:
                flipped.append(model.encode(images.flip(-1)).float().cpu())
        labels.append(batch.labels)
    return torch.cat(latents), torch.cat(flipped) if flip else None, torch.cat(labels)


def _shard_counts(directory: Path, num_shards: int) -> list[int]:
    counts = []
    for index in range(num_shards):
        with safe_open(str(directory / shard_name(index)), framework="pt") as handle:
            counts.append(handle.get_slice("labels").get_shape()[0])
    return counts
