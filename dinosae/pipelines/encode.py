"""``dinosae encode``: an image folder to a latent cache (see ``dinosae.io.latents``).

A cache is written by one job at a time (its lock), and records what it
encodes in ``protocol.json`` before the first shard: the autoencoder's
checkpoint, the data's identity, the shard size, flips and the image size. A
rerun with the same protocol resumes; one with another is refused, so that a
finished cache is never silently mixed with other latents. Shards already
there are checked (header, size, shapes) before they are trusted; a damaged
one is encoded again.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dinosae.data.images import DataError, FolderBatches, ImageDataset
from dinosae.io.atomic import remove_leftovers, write_json
from dinosae.io.checkpoint import resolve_checkpoint
from dinosae.io.latents import LatentCache, LatentCacheError, shard_name, shard_problem, write_meta, write_shard
from dinosae.io.loading import load_autoencoder
from dinosae.pipelines.exclusive import changed_settings, exclusive
from dinosae.runtime import barrier, init_distributed, on_main, shutdown

PROTOCOL = "protocol.json"


def encode_folder(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike, *,
                  flip: bool = False, shard_size: int = 1024, batch_size: int = 64,
                  teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                  num_workers: int = 4, progress: bool = True) -> LatentCache:
    """Encode every image of ``data_dir`` with the autoencoder ``ckpt`` into the cache ``out``.

    Complete shards already in ``out`` are kept, so rerunning the command
    resumes. Under ``torchrun`` each rank encodes every ``world_size``-th shard.
    Unreadable images are skipped with a warning; their slots are dropped. A
    folder of which no image decodes is a ``DataError``.
    """
    out = Path(out)
    env = init_distributed(device)
    try:
        with exclusive(out, "latent cache", env, remove_leftovers):
            model = load_autoencoder(ckpt, teacher_weights=teacher_weights, device=env.device)
            dataset = ImageDataset(data_dir, model.config.image_size)
            tokens, dim = model.encoder.grid_size() ** 2, model.latent_dim
            protocol = {"ae_checkpoint": str(resolve_checkpoint(ckpt).resolve()), "data": dataset.identity(),
                        "shard_size": shard_size, "flip": flip, "image_size": model.config.image_size,
                        "tokens": tokens, "dim": dim}
            on_main(env, lambda: _claim(out, protocol))
            num_shards = -(-len(dataset) // shard_size)
            mine = [i for i in range(num_shards) if i % env.world_size == env.rank
                    and not _trusted(out / shard_name(i), tokens, dim, flip)]
            bar = tqdm(total=len(mine), unit="shard", disable=not (progress and env.is_main))
            for shard in mine:
                indices = range(shard * shard_size, min((shard + 1) * shard_size, len(dataset)))
                latents, flipped, labels = _encode_shard(model, dataset, indices, flip, batch_size, num_workers,
                                                         env.device)
                write_shard(out, shard, latents, labels, flipped)
                bar.update(1)
            bar.close()
            barrier(env)
            on_main(env, lambda: _finish(out, protocol, num_shards, dataset, str(ckpt), data_dir))
    finally:
        shutdown(env)
    return LatentCache(out)


def _claim(out: Path, protocol: dict) -> None:
    """Record what the cache encodes, or refuse a cache that encodes something else."""
    path = out / PROTOCOL
    if path.is_file():
        recorded = json.loads(path.read_text())
    elif any(out.glob("shard_*.safetensors")) or (out / "meta.json").is_file():
        recorded = _protocol_of_an_older_cache(out)
    else:
        write_json(path, protocol)
        return
    changed = changed_settings(recorded, protocol)
    if changed:
        raise LatentCacheError(f"{str(out)!r} holds latents encoded with other settings ({', '.join(changed)}); "
                               "choose another --out, or rerun with the same settings to resume")
    write_json(path, protocol)


def _protocol_of_an_older_cache(out: Path) -> dict:
    """What a cache written before protocol files says of itself in ``meta.json`` (its shards alone say
    nothing, and are not trusted)."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        raise LatentCacheError(f"{str(out)!r} holds shards of an unknown encoding (no {PROTOCOL} or meta.json); "
                               "choose another --out")
    meta = json.loads(meta_path.read_text())
    return {"shard_size": meta.get("shard_size"), "flip": meta.get("flip"), "image_size": meta.get("image_size"),
            "tokens": meta.get("tokens"), "dim": meta.get("dim")}


def _trusted(path: Path, tokens: int, dim: int, flip: bool) -> bool:
    if not path.is_file():
        return False
    problem = shard_problem(path, tokens, dim, flip)
    if problem is not None:
        warnings.warn(f"encoding {path.name} again: {problem}", stacklevel=3)
    return problem is None


def _finish(out: Path, protocol: dict, num_shards: int, dataset: ImageDataset, ckpt: str,
            data_dir: str | os.PathLike) -> None:
    counts = _shard_counts(out, num_shards)
    if sum(counts) == 0:
        raise DataError(f"no image of {str(data_dir)!r} could be decoded ({len(dataset)} files tried); "
                        "the cache is left unfinished")
    write_meta(out, {"num": sum(counts), "shard_counts": counts, "tokens": protocol["tokens"],
                     "dim": protocol["dim"], "shard_size": protocol["shard_size"], "num_shards": num_shards,
                     "flip": protocol["flip"], "classes": dataset.classes, "ae_checkpoint": ckpt,
                     "image_size": protocol["image_size"]})


@torch.no_grad()
def _encode_shard(model, dataset: ImageDataset, indices: range, flip: bool, batch_size: int,
                  num_workers: int, device: torch.device):
    dim, tokens = model.latent_dim, model.encoder.grid_size() ** 2
    latents, flipped = [torch.empty(0, tokens, dim)], [torch.empty(0, tokens, dim)]
    labels = [torch.empty(0, dtype=torch.long)]
    for batch in FolderBatches(dataset, indices, batch_size, num_workers):
        images = batch.images.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents.append(model.encode(images).float().cpu())
            if flip:
                flipped.append(model.encode(images.flip(-1)).float().cpu())
        labels.append(batch.labels)
    latents, flipped = torch.cat(latents), torch.cat(flipped) if flip else None
    if not all(bool(torch.isfinite(z).all()) for z in (latents, flipped) if z is not None):
        raise FloatingPointError(f"the autoencoder gave non-finite latents for images {indices.start}.."
                                 f"{indices.stop - 1} (NaN weights?); nothing of them was written")
    return latents, flipped, torch.cat(labels)


def _shard_counts(directory: Path, num_shards: int) -> list[int]:
    counts = []
    for index in range(num_shards):
        with safe_open(str(directory / shard_name(index)), framework="pt") as handle:
            counts.append(handle.get_slice("labels").get_shape()[0])
    return counts
