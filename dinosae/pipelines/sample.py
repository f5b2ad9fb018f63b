"""``dinosae sample``: many samples on many processes, one ``samples.npz`` whatever the number of ranks.

Samples are split into shards of consecutive indices; under ``torchrun`` rank
``r`` draws the shards ``r, r + K, ...``. A sample is a function of
``(seed, index)`` (``dinosae.generation.samples``) and a shard is drawn in the
same batches on any rank, so the result is the same, image for image and in
order, for any number of processes. Layout::

    OUT/shards/protocol.json        what is being sampled (refuses a rerun that differs)
    OUT/shards/shard_00000.npz      images (n, H, W, 3) uint8, labels, indices: one per shard
    OUT/samples.npz                 arr_0 (N, H, W, 3) uint8 and labels (N,), written last
    OUT/samples.json                the protocol, beside the samples it describes, with the solver's NFE
    OUT/images/*.png, OUT/grid.png

Shards and ``samples.npz`` are written atomically; a rerun keeps the finished
shards and draws the missing ones, and ``samples.npz`` appears only when every
shard is there. If a rank fails, ``torchrun`` stops the others and nothing
incomplete is left under a final name.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from dinosae.generation.samples import (check_pair, class_labels, generate_images, sampling_record, sampling_shift,
                                       save_grid, write_pngs)
from dinosae.io.atomic import remove_leftovers, write_atomic, write_json
from dinosae.io.checkpoint import resolve_checkpoint
from dinosae.io.loading import load_autoencoder, load_dit, model_record
from dinosae.io.pretrained import is_pretrained
from dinosae.pipelines.exclusive import changed_settings, exclusive
from dinosae.runtime import DistEnv, barrier, init_distributed, on_main, shutdown

SHARDS = "shards"
PROTOCOL = "protocol.json"


class SampleRunError(ValueError):
    """An output folder holds another sampling run, or a run's shards are incomplete."""


@dataclass(frozen=True)
class SampleProtocol:
    """Everything that decides the samples; recorded beside them and compared on a rerun.

    Example:
        >>> SampleProtocol(ae="ae", dit="dit", num=8).shard_ranges(3)
        [range(0, 3), range(3, 6), range(6, 8)]
    """

    ae: str
    dit: str
    num: int
    labels: str = "equal"
    classes: tuple[int, ...] | None = None
    seed: int = 0
    steps: int = 50
    method: str = "euler"
    cfg: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    shift: float | None = None
    decode_scale: float | None = None
    shard_size: int = 1024
    batch_size: int = 32
    precision: str = "auto"

    def shard_ranges(self, shard_size: int | None = None) -> list[range]:
        size = shard_size or self.shard_size
        return [range(start, min(start + size, self.num)) for start in range(0, self.num, size)]

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def sample_to_folder(out: str | os.PathLike, protocol: SampleProtocol, *,
                     teacher_weights: str | os.PathLike | None = None, device: str | None = None, png: bool = True,
                     progress: bool = True) -> dict[str, Path]:
    """Draw ``protocol.num`` samples into ``out`` (see the module docstring); returns the paths written (on the
    main rank; other ranks return ``{}``)."""
    out = Path(out)
    env = init_distributed(device)
    try:
        with exclusive(out, "sample folder", env, _remove_leftovers):
            return _sample(out, protocol, env, teacher_weights, png, progress)
    finally:
        shutdown(env)


def _remove_leftovers(out: Path) -> list[Path]:
    return remove_leftovers(out) + remove_leftovers(out / SHARDS) + remove_leftovers(out / "images")


def _sample(out: Path, protocol: SampleProtocol, env: DistEnv, teacher_weights: str | os.PathLike | None,
            png: bool, progress: bool) -> dict[str, Path]:
    shards_dir = out / SHARDS
    on_main(env, lambda: _claim(shards_dir, protocol))
    ae = load_autoencoder(protocol.ae, teacher_weights=teacher_weights, device=env.device)
    # Resolved once: a run still training may name a newer checkpoint by the time its record is read.
    dit_path = protocol.dit if is_pretrained(protocol.dit) else resolve_checkpoint(protocol.dit)
    dit = load_dit(dit_path, device=env.device)
    record = model_record(dit_path)
    if protocol.decode_scale is not None:
        ae.config.decode_scale = protocol.decode_scale
    check_pair(ae, dit)
    # An exported folder without its training config samples with the default shift of today's config.
    shift = sampling_shift(dit, record.get("train_config", {}), protocol.shift)
    labels = class_labels(protocol.num, dit.config.num_classes, protocol.classes, protocol.labels, protocol.seed)
    class_names = record.get("classes", [])
    ranges = protocol.shard_ranges()
    mine = [i for i in range(len(ranges)) if i % env.world_size == env.rank
            and not _trusted(shards_dir / _shard_name(i), ranges[i])]
    sampler = dict(steps=protocol.steps, cfg=protocol.cfg, method=protocol.method,
                   guidance_interval=protocol.guidance_interval, shift=shift, precision=protocol.precision)
    for shard in tqdm(mine, unit="shard", disable=not (progress and env.is_main)):
        indices = ranges[shard]
        images = generate_images(ae, dit, labels[indices.start:indices.stop], indices=indices,
                                 batch_size=protocol.batch_size, seed=protocol.seed, progress=False, **sampler)
        shard_labels = labels[indices.start:indices.stop].numpy()
        if png:
            write_pngs(out / "images", images, shard_labels.tolist(), indices, class_names)
        write_atomic(shards_dir / _shard_name(shard), lambda tmp: np.savez(
            tmp, images=images, labels=shard_labels, indices=np.arange(indices.start, indices.stop)))
    barrier(env)
    # Only the main rank merges; the others need not wait for it.
    record = sampling_record(dit, protocol.steps, protocol.method, shift)
    return merge_shards(out, protocol, record) if env.is_main else {}


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.npz"


def _trusted(path: Path, expected: range) -> bool:
    """Whether a shard left by an earlier run can be kept: readable, and of the samples it should hold
    (its zip directory and array headers are read, not its images)."""
    if not path.is_file():
        return False
    try:
        with np.load(path) as shard:
            fine = np.array_equal(shard["indices"], np.arange(expected.start, expected.stop)) and \
                shard["labels"].shape == (len(expected),)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        fine, reason = False, f"it is unreadable ({error})"
    else:
        reason = "it holds other samples"
    if not fine:
        warnings.warn(f"drawing {path.name} again: {reason}", stacklevel=2)
    return fine


def _claim(shards_dir: Path, protocol: SampleProtocol) -> None:
    """Record the protocol, or refuse a folder whose shards were drawn with another."""
    path = shards_dir / PROTOCOL
    if path.is_file():
        # Fields added since the folder was written had their defaults then.
        recorded = {**SampleProtocol(ae="", dit="", num=0).to_json(), **json.loads(path.read_text())}
        changed = changed_settings(recorded, protocol.to_json())
        if changed:
            raise SampleRunError(f"{str(shards_dir.parent)!r} holds samples drawn with other settings "
                                 f"({', '.join(changed)}); choose another --out, or rerun with the same settings "
                                 "to resume")
    else:
        write_json(path, protocol.to_json())


def merge_shards(out: str | os.PathLike, protocol: SampleProtocol, record: dict | None = None) -> dict[str, Path]:
    """Check every shard and stream them into ``samples.npz`` (no copy of all images in memory); ``samples.json``
    holds the protocol and ``record`` (what the solver did: ``nfe``, ``shift_used``)."""
    out = Path(out)
    shards = [out / SHARDS / _shard_name(i) for i in range(len(protocol.shard_ranges()))]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise SampleRunError(f"{str(out)!r} lacks {len(missing)} shard(s) ({missing[0]}, ...): rerun to finish them")
    shapes = []
    for path, expected in zip(shards, protocol.shard_ranges()):
        with np.load(path) as shard:
            if not np.array_equal(shard["indices"], np.arange(expected.start, expected.stop)):
                raise SampleRunError(f"{str(path)!r} does not hold samples {expected.start}..{expected.stop - 1}")
            shapes.append(shard["images"].shape)
    if len({shape[1:] for shape in shapes}) != 1:
        raise SampleRunError(f"the shards of {str(out)!r} hold images of different sizes: {sorted(set(shapes))}")

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, name in (("images", "arr_0"), ("labels", "labels")):
                _stream_array(archive, name, shards, key)

    npz = write_atomic(out / "samples.npz", write)
    write_json(out / "samples.json", {**protocol.to_json(), **(record or {})})
    with np.load(shards[0]) as first:
        grid = save_grid(out / "grid.png", first["images"])
    return {"npz": npz, "grid": grid, "protocol": out / "samples.json", "images": out / "images"}


def _stream_array(archive: zipfile.ZipFile, name: str, shards: Sequence[Path], key: str) -> None:
    """``name.npy`` in ``archive``: the concatenation of every shard's ``key``, written shard by shard."""
    with np.load(shards[0]) as first:
        dtype, tail = first[key].dtype, first[key].shape[1:]
    rows = 0
    for path in shards:
        with np.load(path) as shard:
            rows += shard[key].shape[0]
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *tail)}
    with archive.open(f"{name}.npy", "w", force_zip64=True) as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        for path in shards:
            with np.load(path) as shard:
                stream.write(np.ascontiguousarray(shard[key]).tobytes())


def sample_command(ae: str | os.PathLike, dit: str | os.PathLike, out: str | os.PathLike, *, num: int,
                   labels: str = "equal", classes: Sequence[int] | None = None, seed: int = 0, steps: int = 50,
                   method: str = "euler", cfg: float = 1.0, guidance_interval: tuple[float, float] | None = None,
                   shift: float | None = None, decode_scale: float | None = None, shard_size: int | None = None,
                   batch_size: int = 32, precision: str = "auto", **options: object) -> dict[str, Path]:
    """``sample_to_folder`` with the protocol built from arguments; the default shard is 32 batches."""
    protocol = SampleProtocol(ae=str(ae), dit=str(dit), num=num, labels=labels,
                              classes=None if not classes else tuple(classes), seed=seed, steps=steps,
                              method=method, cfg=cfg, guidance_interval=guidance_interval, shift=shift,
                              decode_scale=decode_scale, shard_size=shard_size or 32 * batch_size,
                              batch_size=batch_size, precision=precision)
    return sample_to_folder(out, protocol, **options)


def read_protocol(samples: str | os.PathLike) -> dict | None:
    """The protocol recorded beside a ``samples.npz`` (``samples.json``), if any."""
    path = Path(samples).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None

