"""``dinosae encode``: an image folder to a latent cache (see ``dinosae.data.latents``), as a resumable
sharded job (``dinosae.pipelines.jobs``).

The cache's protocol is the autoencoder's checkpoint, the data's identity, the shard size, flips, the image
size and the latent shape. Shards already there are checked (header, size, shapes) before they are
trusted; a damaged one is encoded again.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dinosae.data.images import DataError, FolderBatches, ImageDataset
from dinosae.data.index import folder_listing
from dinosae.data.latents import LatentCache, shard_name, shard_problem, write_meta, write_shard
from dinosae.io.atomic import remove_leftovers
from dinosae.io.lock import exclusive
from dinosae.models.loading import build_model, read_model
from dinosae.pipelines.jobs import claim_folder, shards_to_do
from dinosae.runtime import barrier, init_distributed, shutdown


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
            record = read_model(ckpt, kind="autoencoder")
            model = build_model(record, teacher_weights).to(env.device).eval()
            dataset = ImageDataset(data_dir, model.config.image_size, dtype=torch.uint8,
                                   listing=folder_listing(data_dir, env.on_main))
            tokens, dim = model.encoder.grid_size() ** 2, model.latent_dim
            protocol = {"ae_checkpoint": str(record.path.resolve()), "data": dataset.identity(),
                        "shard_size": shard_size, "flip": flip, "image_size": model.config.image_size,
                        "tokens": tokens, "dim": dim}
            claim_folder(env, out, protocol, "latents", "shard_*.safetensors")
            num_shards = -(-len(dataset) // shard_size)
            mine = shards_to_do(env, num_shards, lambda i: out / shard_name(i),
                                lambda path, _: shard_problem(path, tokens, dim, flip))
            _encode_shards(model, dataset, out, mine, shard_size, flip=flip, batch_size=batch_size,
                           num_workers=num_workers, device=env.device, progress=progress and env.is_main)
            barrier(env)
            env.on_main(lambda: _finish(out, protocol, num_shards, dataset, str(ckpt), data_dir))
    finally:
        shutdown(env)
    return LatentCache(out)


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
def _encode_shards(model, dataset: ImageDataset, out: Path, shards: list[int], shard_size: int, *, flip: bool,
                   batch_size: int, num_workers: int, device: torch.device, progress: bool) -> None:
    """Encode ``shards`` in order through one loader; a background thread writes each finished shard
    while the device encodes the next."""
    groups = [range(shard * shard_size, min((shard + 1) * shard_size, len(dataset))) for shard in shards]
    batches = FolderBatches(dataset, batch_size=batch_size, num_workers=num_workers, groups=groups,
                            pin_memory=device.type == "cuda")
    bar = tqdm(total=sum(len(group) for group in groups), unit="img", unit_scale=True, disable=not progress,
               desc="encode")
    shape = (model.encoder.grid_size() ** 2, model.latent_dim)
    with _ShardWriter(out, [_ShardLatents(shard, group, shape) for shard, group in zip(shards, groups)]) as writer:
        for batch in batches:
            images = batch.pixels(device)
            writer.write_before(batch.indices[0] // shard_size)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                latents = model.encode(images).to(torch.bfloat16).cpu()
                flipped = model.encode(images.flip(-1)).to(torch.bfloat16).cpu() if flip else None
            writer.current.add(latents, flipped, batch.labels)
            bar.update(len(batch.indices) + len(batch.skipped))
    bar.close()


class _ShardLatents:
    """The latents of one shard's readable images, gathered batch by batch."""

    def __init__(self, shard: int, indices: range, shape: tuple[int, int]) -> None:
        self.shard, self.indices = shard, indices
        empty = torch.empty(0, *shape, dtype=torch.bfloat16)
        self.latents, self.flipped = [empty], [empty]
        self.labels = [torch.empty(0, dtype=torch.long)]

    def add(self, latents: torch.Tensor, flipped: torch.Tensor | None, labels: torch.Tensor) -> None:
        self.latents.append(latents)
        self.labels.append(labels)
        if flipped is not None:
            self.flipped.append(flipped)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(latents, labels, flipped latents or None), checked to be finite."""
        latents, flipped = torch.cat(self.latents), torch.cat(self.flipped) if len(self.flipped) > 1 else None
        if not all(bool(torch.isfinite(z).all()) for z in (latents, flipped) if z is not None):
            raise FloatingPointError(f"the autoencoder gave non-finite latents for images {self.indices.start}.."
                                     f"{self.indices.stop - 1} (NaN weights?); nothing of them was written")
        return latents, torch.cat(self.labels), flipped


class _ShardWriter:
    """Writes shards, in order, on a background thread: at most one shard waits to be written while the
    next is encoded, and a failed write raises in the encoding thread at the next shard or at the end."""

    def __init__(self, out: Path, shards: list[_ShardLatents]) -> None:
        self.out, self.pending = out, shards
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.writing: Future | None = None

    @property
    def current(self) -> _ShardLatents:
        return self.pending[0]

    def write_before(self, shard: float) -> None:
        """Hand every shard before ``shard`` to the writer (those that got no readable image, too)."""
        while self.pending and self.pending[0].shard < shard:
            done = self.pending.pop(0)
            tensors = done.tensors()
            self._wait()
            self.writing = self.pool.submit(write_shard, self.out, done.shard, *tensors)

    def _wait(self) -> None:
        if self.writing is not None:
            self.writing.result()

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                self.write_before(math.inf)
                self._wait()
        finally:
            self.pool.shutdown(wait=True)


def _shard_counts(directory: Path, num_shards: int) -> list[int]:
    counts = []
    for index in range(num_shards):
        with safe_open(str(directory / shard_name(index)), framework="pt") as handle:
            counts.append(handle.get_slice("labels").get_shape()[0])
    return counts
