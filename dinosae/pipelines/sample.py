"""``dinosae sample``: images from a trained DiT and the autoencoder's decoder, many samples on many
processes, one ``samples.npz`` whatever the number of ranks.

Sample ``i``'s starting noise, and its label when labels are drawn at random,
come from a generator seeded by ``(seed, i)`` alone (:func:`sample_generator`),
so a sample does not depend on the batch it was drawn in or on the process
that drew it.

Samples are split into shards of consecutive indices; under ``torchrun`` rank
``r`` draws the shards ``r, r + K, ...``. A sample is a function of
``(seed, index)`` and a shard is drawn in the
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
import math
import os
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

import sphere_ops
from dinosae.config import DiTTrainConfig, from_dict
from dinosae.flow import evaluation_times, function_evaluations, sample, time_grid, training_shift
from dinosae.io.atomic import remove_leftovers, write_atomic, write_json
from dinosae.io.lock import exclusive
from dinosae.io.names import safe_name
from dinosae.models.loading import build_model, load_model, read_model
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.pipelines.jobs import claim_folder, missing_shards, shards_to_do
from dinosae.runtime import DistEnv, barrier, init_distributed, sampling_precision, shutdown

LABEL_MODES = ("equal", "random")
# Streams of one sample's randomness.
_NOISE, _LABEL = 0, 1


def sample_generator(seed: int, index: int, stream: int = _NOISE) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, index, stream)``.

    Example:
        >>> a = torch.rand(2, generator=sample_generator(0, 5))
        >>> bool(torch.equal(a, torch.rand(2, generator=sample_generator(0, 5))))
        True
    """
    return torch.Generator().manual_seed(((seed * 1_000_003 + index) * 4 + stream) % (1 << 63))


def class_labels(num: int, num_classes: int, classes: Sequence[int] | None = None, mode: str = "equal",
                 seed: int = 0, start: int = 0) -> torch.Tensor:
    """The labels of samples ``start .. start + num - 1``, from ``classes`` (all classes when None): sample
    ``i``'s label depends on ``i`` alone, so a shard's labels need no list of every sample's.

    ``"equal"`` cycles through them, so each gets an equal share (the usual
    ImageNet protocol, 50 per class of 50,000); ``"random"`` draws sample ``i``'s
    label from ``(seed, i)``.

    Example:
        >>> class_labels(5, 3).tolist(), class_labels(3, 10, [7]).tolist(), class_labels(2, 3, start=4).tolist()
        ([0, 1, 2, 0, 1], [7, 7, 7], [1, 2])
        >>> bool(torch.equal(class_labels(6, 4, mode="random")[3:], class_labels(3, 4, mode="random", start=3)))
        True
    """
    chosen = list(range(num_classes)) if not classes else list(classes)
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are outside [0, {num_classes})")
    indices = range(start, start + num)
    if mode == "equal":
        picks = [i % len(chosen) for i in indices]
    elif mode == "random":
        picks = [int(torch.randint(len(chosen), (), generator=sample_generator(seed, i, _LABEL))) for i in indices]
    else:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return torch.tensor([chosen[p] for p in picks], dtype=torch.long)


def starting_noise(dit: DiT, indices: Sequence[int], seed: int) -> torch.Tensor:
    """The starting points (B, N, D) of samples ``indices``, from the DiT's manifold's prior; drawn on the CPU
    in float32, so they are the same on every device."""
    shape = (dit.config.num_tokens, dit.config.in_dim)
    return torch.stack([dit.manifold.prior(shape, generator=sample_generator(seed, int(index))) for index in indices])


@torch.no_grad()
def generate_latents(dit: DiT, labels: torch.Tensor, *, steps: int = 50, cfg: float = 1.0, method: str = "euler",
                     guidance_interval: tuple[float, float] | None = None, shift: float = 1.0,
                     generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                     guide: DiT | None = None, guidance: float = 1.0) -> torch.Tensor:
    """Latents (B, N, D) with unit tokens for ``labels``, integrated on the DiT's manifold (a Euclidean DiT's
    samples normalized onto the spheres, which the decoder takes), from ``noise`` when given (else drawn
    from ``generator``); AutoGuidance by ``guide`` (:func:`check_guide`) with weight ``guidance``."""
    config = dit.config
    if guide is not None:
        check_guide(dit, guide)
    shape = (labels.shape[0], config.num_tokens, config.in_dim)
    x = sample(dit, dit.manifold, shape, labels, prediction=config.prediction, steps=steps, method=method,
               cfg_scale=cfg, guidance_interval=guidance_interval, shift=shift, generator=generator, noise=noise,
               guide=guide, guidance=guidance)
    return sphere_ops.normalize(x)


def check_guide(dit: DiT, guide: DiT) -> None:
    """A one-line error when ``guide`` cannot guide ``dit``: its velocities must live where the main model's do
    (manifold and radius, token shape) and mean the same (classes, prediction).

    Example:
        >>> from dinosae import create_model
        >>> check_guide(create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3),
        ...             create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=4))
        Traceback (most recent call last):
        ...
        ValueError: the guide DiT has 4 classes, the main DiT 3: AutoGuidance needs a guide of the same task
    """
    fields = (("manifold", "manifold"), ("radius", "radius"), ("num_tokens", "tokens"), ("in_dim", "token size"),
              ("num_classes", "classes"), ("prediction", "prediction"))
    for name, what in fields:
        mine, theirs = getattr(dit.config, name), getattr(guide.config, name)
        if mine != theirs:
            shown = f"{theirs} {what}, the main DiT {mine}" if name in ("num_tokens", "num_classes") else \
                f"{what} {theirs!r}, the main DiT {mine!r}"
            raise ValueError(f"the guide DiT has {shown}: AutoGuidance needs a guide of the same task")


def sampling_shift(dit: DiT, train_config: dict, shift: float | None = None) -> float:
    """The time shift to sample with: ``shift``, else the one the DiT was trained with (its saved
    ``train_config``).

    Example:
        >>> from dinosae import create_model
        >>> dit = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2)
        >>> sampling_shift(dit, {"shift": 3.0}), sampling_shift(dit, {}, 1.5)
        (3.0, 1.5)
    """
    if shift is not None:
        return shift
    return training_shift(from_dict(DiTTrainConfig, train_config).shift, dit.config.num_tokens, dit.config.in_dim)


@dataclass(frozen=True)
class Sampler:
    """The solver a DiT samples with: ``steps`` of ``method`` on the grid of ``shift``, and ``source``, where
    that choice came from (``"distilled"``: a student's own; ``"given"``; ``"default"``)."""

    steps: int
    method: str
    shift: float
    source: str


DEFAULT_STEPS, DEFAULT_METHOD = 50, "euler"


def resolve_sampler(dit: DiT, meta: dict, steps: int | None = None, method: str | None = None,
                    shift: float | None = None) -> Sampler:
    """The solver for a DiT and its record's ``meta``: what is given, else a distilled student's own NFE, solver
    and shift (``meta["distilled"]``, ``dinosae.train.distill``), else 50 Euler steps at the training shift.

    Example:
        >>> from dinosae import create_model
        >>> dit = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2)
        >>> resolve_sampler(dit, {"distilled": {"nfe": 2, "method": "euler", "shift": 1.5}})
        Sampler(steps=2, method='euler', shift=1.5, source='distilled')
        >>> resolve_sampler(dit, {"train_config": {"shift": 1.0}}, steps=8, method="midpoint").source
        'given'
    """
    distilled = meta.get("distilled")
    if distilled is not None:
        return Sampler(steps or distilled["nfe"], method or distilled["method"],
                       distilled["shift"] if shift is None else shift,
                       "distilled" if steps is None and method is None else "given")
    source = "default" if steps is None and method is None else "given"
    return Sampler(steps or DEFAULT_STEPS, method or DEFAULT_METHOD,
                   sampling_shift(dit, meta.get("train_config", {}), shift), source)


def best_sampler(dit: DiT, meta: dict, budget: int) -> Sampler:
    """The best solver a DiT has within ``budget`` evaluations, by ``dinosae ablate sampling``: a distilled
    student's own steps, else midpoint (it matched Euler-250 at the fewest evaluations there, BENCHMARKS.md).

    Example:
        >>> from dinosae import create_model
        >>> best = best_sampler(create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2), {}, 30)
        >>> best.steps, best.method, best.source
        (15, 'midpoint', 'best')
    """
    if "distilled" in meta:
        return resolve_sampler(dit, meta)
    return replace(resolve_sampler(dit, meta, max(1, budget // 2), "midpoint"), source="best")


def sampling_record(dit: DiT, steps: int, method: str, shift: float, guide: dict | None = None,
                    guidance_interval: tuple[float, float] | None = None) -> dict:
    """What ``samples.json`` records of the solver beside the protocol: the number of function evaluations
    (the model is called once per evaluation, on a doubled batch where guidance applies), the shift used, and
    ``guide`` (what the AutoGuidance model is) with its evaluations (those inside the guidance interval).

    Example:
        >>> from dinosae import create_model
        >>> sampling_record(create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2), 25, "heun", 1.0)
        {'nfe': 50, 'shift_used': 1.0}
    """
    record: dict = {"nfe": function_evaluations(method, steps, dit.config.prediction), "shift_used": shift}
    if guide is not None:
        lo, hi = guidance_interval or (0.0, 1.0)
        times = evaluation_times(method, time_grid(steps, shift), dit.config.prediction)
        record["guide"] = {**guide, "evaluations": sum(lo <= t <= hi for t in times)}
    return record


def check_pair(ae: SphericalAutoencoder, dit: DiT) -> None:
    """A clear error when the DiT's latents are not the shape the autoencoder decodes."""
    if ae.latent_dim != dit.config.in_dim or ae.encoder.grid_size() ** 2 != dit.config.num_tokens:
        raise ValueError(f"the DiT generates ({dit.config.num_tokens}, {dit.config.in_dim}) latents, the "
                         f"autoencoder decodes ({ae.encoder.grid_size() ** 2}, {ae.latent_dim})")


@torch.no_grad()
def generate_images(ae: SphericalAutoencoder, dit: DiT, labels: torch.Tensor, *, indices: Sequence[int] | None = None,
                    batch_size: int = 32, seed: int = 0, progress: bool = True, precision: str = "auto",
                    **sampler: object) -> np.ndarray:
    """uint8 images (N, H, W, 3) for ``labels``: sample ``indices[j]`` (default ``j``) for ``labels[j]``, the DiT
    and the decoder run at ``precision`` (``dinosae.runtime.sampling_precision``; the ODE's state stays float32)."""
    check_pair(ae, dit)
    device = next(dit.parameters()).device
    indices = list(range(labels.shape[0])) if indices is None else list(indices)
    images = []
    for start in tqdm(range(0, labels.shape[0], batch_size), unit="batch", disable=not progress):
        batch = labels[start:start + batch_size].to(device)
        noise = starting_noise(dit, indices[start:start + batch_size], seed)
        with sampling_precision(device, precision):
            latents = generate_latents(dit, batch, noise=noise, **sampler)
            decoded = ae.decode(latents)
        if not bool(torch.isfinite(latents).all()) or not bool(torch.isfinite(decoded).all()):
            raise FloatingPointError(f"samples {indices[start]}..{indices[start + batch.shape[0] - 1]} are not "
                                     "finite (a DiT or autoencoder with NaN weights?); no image of them was written")
        pixels = (decoded.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(images)


def write_pngs(folder: str | os.PathLike, images: np.ndarray, labels: Sequence[int], indices: Sequence[int],
               class_names: Sequence[str] = ()) -> Path:
    """One PNG per image, named by its sample index and class (made safe: class names come from files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for image, label, index in zip(images, labels, indices):
        name = safe_name(class_names[label]) if label < len(class_names) else str(label)
        Image.fromarray(image).save(folder / f"{index:06d}_{name}.png")
    return folder


def save_grid(path: str | os.PathLike, images: np.ndarray) -> Path:
    """The first 64 images as an 8-wide grid."""
    tensor = torch.from_numpy(np.ascontiguousarray(images[:64])).permute(0, 3, 1, 2).float() / 255
    return write_atomic(path, lambda tmp: save_image(make_grid(tensor, nrow=8, padding=2, pad_value=1.0), tmp,
                                                     format="png"))


def write_samples(out: str | os.PathLike, images: np.ndarray, labels: torch.Tensor,
                  class_names: Sequence[str] = ()) -> dict[str, Path]:
    """PNGs, a grid, and ``samples.npz``; returns their paths."""
    out = Path(out)
    folder = write_pngs(out / "images", images, labels.tolist(), range(len(images)), class_names)
    grid = save_grid(out / "grid.png", images)
    npz = write_atomic(out / "samples.npz", lambda tmp: np.savez(tmp, arr_0=images, labels=labels.numpy()))
    return {"images": folder, "grid": grid, "npz": npz}


# ---------------------------------------------------------------- the sharded job

SHARDS = "shards"
# Bounds on what a protocol may ask: beyond them a request is a typo, and would allocate before it fails.
MAX_STEPS = 100_000
MAX_SHARDS = 1_000_000


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
    steps: int | None = None
    method: str | None = None
    cfg: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    shift: float | None = None
    decode_scale: float | None = None
    shard_size: int = 1024
    batch_size: int = 32
    precision: str = "auto"
    guide_dit: str | None = None
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.cfg) or not math.isfinite(self.guidance):
            raise ValueError(f"guidance scales must be finite, got --cfg {self.cfg} and --guidance {self.guidance}")
        if (self.guide_dit is None) != (self.guidance == 1.0):
            raise ValueError("AutoGuidance needs both --guide-dit and a --guidance weight other than 1")
        for name in ("num", "steps", "shard_size", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps > MAX_STEPS:
            raise ValueError(f"steps must be at most {MAX_STEPS:,} (a solver's time grid is held whole), got "
                             f"{self.steps:,}")
        shards = -(-self.num // self.shard_size)
        if shards > MAX_SHARDS:
            raise ValueError(f"{self.num:,} samples in shards of {self.shard_size} make {shards:,} shards, more "
                             f"than {MAX_SHARDS:,}: pass a larger --shard-size")

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
    # Read once, weights and record together: a run still training may write a newer checkpoint meanwhile.
    record = read_model(protocol.dit, kind="dit")
    dit = build_model(record).to(env.device).eval()
    # An exported folder without its training config samples with the default shift of today's config.
    solver = resolve_sampler(dit, record.meta, protocol.steps, protocol.method, protocol.shift)
    # The protocol records the solver as resolved, so that a rerun without --steps compares equal.
    protocol = replace(protocol, steps=solver.steps, method=solver.method)
    claim_folder(env, shards_dir, protocol.to_json(), "samples", "shard_*.npz")
    ae = load_model(protocol.ae, kind="autoencoder", teacher_weights=teacher_weights, device=env.device)
    guide, guide_record = None, None
    if protocol.guide_dit is not None:
        guide_source = read_model(protocol.guide_dit, kind="dit")
        guide = build_model(guide_source).to(env.device).eval()
        check_guide(dit, guide)
        guide_record = {"dit": protocol.guide_dit, "path": str(guide_source.path.resolve()),
                        "step": guide_source.meta.get("step"), "guidance": protocol.guidance}
    if protocol.decode_scale is not None:
        ae.config = replace(ae.config, decode_scale=protocol.decode_scale)
    check_pair(ae, dit)
    class_labels(1, dit.config.num_classes, protocol.classes, protocol.labels, protocol.seed)  # the classes exist
    class_names = record.meta.get("classes", [])
    ranges = protocol.shard_ranges()
    mine = shards_to_do(env, len(ranges), lambda i: shards_dir / _shard_name(i),
                        lambda path, i: _shard_problem(path, ranges[i]))
    sampler = dict(steps=solver.steps, cfg=protocol.cfg, method=solver.method,
                   guidance_interval=protocol.guidance_interval, shift=solver.shift, precision=protocol.precision,
                   guide=guide, guidance=protocol.guidance)
    for shard in tqdm(mine, unit="shard", disable=not (progress and env.is_main)):
        indices = ranges[shard]
        labels = class_labels(len(indices), dit.config.num_classes, protocol.classes, protocol.labels,
                              protocol.seed, start=indices.start)
        images = generate_images(ae, dit, labels, indices=indices,
                                 batch_size=protocol.batch_size, seed=protocol.seed, progress=False, **sampler)
        shard_labels = labels.numpy()
        if png:
            write_pngs(out / "images", images, shard_labels.tolist(), indices, class_names)
        write_atomic(shards_dir / _shard_name(shard), lambda tmp: np.savez(
            tmp, images=images, labels=shard_labels, indices=np.arange(indices.start, indices.stop)))
    barrier(env)
    # Only the main rank merges; the others need not wait for it.
    record = {**sampling_record(dit, solver.steps, solver.method, solver.shift, guide_record,
                                protocol.guidance_interval), "sampler_source": solver.source}
    return merge_shards(out, protocol, record) if env.is_main else {}


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.npz"


def _shard_problem(path: Path, expected: range) -> str | None:
    """Why a shard left by an earlier run cannot be kept (None when it can): unreadable, or not of the samples
    it should hold (its zip directory and array headers are read, not its images)."""
    try:
        with np.load(path) as shard:
            fine = np.array_equal(shard["indices"], np.arange(expected.start, expected.stop)) and \
                shard["labels"].shape == (len(expected),)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        return f"it is unreadable ({error})"
    return None if fine else "it holds other samples"


def merge_shards(out: str | os.PathLike, protocol: SampleProtocol, record: dict | None = None) -> dict[str, Path]:
    """Check every shard and stream them into ``samples.npz`` (no copy of all images in memory); ``samples.json``
    holds the protocol and ``record`` (what the solver did: ``nfe``, ``shift_used``)."""
    out = Path(out)
    count = len(protocol.shard_ranges())
    shards = [out / SHARDS / _shard_name(i) for i in range(count)]
    missing = missing_shards(count, lambda i: shards[i])
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
                   labels: str = "equal", classes: Sequence[int] | None = None, seed: int = 0,
                   steps: int | None = None, method: str | None = None, cfg: float = 1.0, guidance_interval: tuple[float, float] | None = None,
                   shift: float | None = None, decode_scale: float | None = None, shard_size: int | None = None,
                   batch_size: int = 32, precision: str = "auto", guide_dit: str | os.PathLike | None = None,
                   guidance: float = 1.0, **options: object) -> dict[str, Path]:
    """``sample_to_folder`` with the protocol built from arguments; the default shard is 32 batches."""
    protocol = SampleProtocol(ae=str(ae), dit=str(dit), num=num, labels=labels,
                              classes=None if not classes else tuple(classes), seed=seed, steps=steps,
                              method=method, cfg=cfg, guidance_interval=guidance_interval, shift=shift,
                              decode_scale=decode_scale, shard_size=shard_size or 32 * batch_size,
                              batch_size=batch_size, precision=precision,
                              guide_dit=None if guide_dit is None else str(guide_dit), guidance=guidance)
    return sample_to_folder(out, protocol, **options)
