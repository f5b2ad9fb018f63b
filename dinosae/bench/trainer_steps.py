"""The trainers' own steps on fake or real CPU tensors, traced: what ``dinosae bench memory`` measures.

``build_training`` builds a setting's models (on fake tensors of a
``FakeTensorMode``: weights never allocated, ops run for their shapes and
dtypes only; or real, random ones) with the trainer's step: ``AutoencoderStep``
or ``DiTStep``, the AdamW and EMA they update. ``run_step`` runs one step,
under bf16 autocast on the CPU where a GPU run would use it, counting what the
forward saves for the backward by top-level module; ``Tracer`` traces steps at
any batch; ``measure_peak`` measures a real step on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import sphere_ops
from dinosae.bench.accounting import Labels, LiveBytes, SavedBytes, fake_modules, module_storages, storage_key
from dinosae.config import AE_PRESETS, DIT_PRESETS, ResolvedRun, RunRequest, resolve_ae_run, resolve_dit_run
from dinosae.config.recipes import recipe_overrides
from dinosae.config.training import PRECISIONS
from dinosae.data.images import ImageBatch
from dinosae.flow import make_time_sampler, training_shift
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.dit import DiT
from dinosae.models.vit import RandomTeacherWarning
from dinosae.runtime import DistEnv
from dinosae.train import autoencoder as ae_trainer
from dinosae.train import dit as dit_trainer
from dinosae.train.ema import EMA
from dinosae.train.loop import TrainState
from dinosae.train.rng import step_generator

KINDS = ("ae", "dit")
# The DiT's latent width when not given: the autoencoder each recipe generates for (ViT-B's 768 for
# DINO-SAE's release, ViT-L's 1024 for HAE).
LATENT_DIMS = {"dino-sae": 768, "hae": 1024}
RESERVE_GIB = 2.0
# No GPU holds a larger per-GPU batch of these models; the largest-batch search stops there too.
MAX_BATCH = 1 << 14
_STEPS = 1000  # the traced step is the last of a run this long: GAN on, latent noise at its full bound

@dataclass(frozen=True)
class MemoryCase:
    """One training setting: model kind and preset, autoencoder stage, recipe, precision, per-GPU batch.

    ``precision="auto"`` is what the trainer does on a GPU: bf16 autocast,
    except the HAE recipe's DiT (float32). ``latent_dim`` (DiT) defaults by
    recipe (``LATENT_DIMS``). ``ddp`` adds DDP's gradient buckets,
    ``reserve_gib`` the stated allowance for memory outside tensors.

    Example:
        >>> MemoryCase("dit", "XL", recipe="hae").resolved_precision
        'fp32'
    """

    kind: str
    preset: str
    stage: int = 1
    recipe: str = "dino-sae"
    precision: str = "auto"
    batch: int = 32
    checkpointing: bool = False
    image_size: int = 256
    latent_dim: int | None = None
    ddp: bool = True
    reserve_gib: float = RESERVE_GIB

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of {KINDS}")
        presets = AE_PRESETS if self.kind == "ae" else DIT_PRESETS
        if self.preset not in presets:
            raise ValueError(f"unknown {self.kind} preset {self.preset!r}; choose one of {list(presets)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if not 1 <= self.batch <= MAX_BATCH or self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"batch must be in [1, {MAX_BATCH}] and image size a multiple of 16, got {self.batch} "
                             f"and {self.image_size}")
        if self.reserve_gib < 0:
            raise ValueError(f"reserve must be >= 0 GiB, got {self.reserve_gib}")
        self.run()  # the recipe's and the stage's own checks, before any model is built

    @property
    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        if self.kind == "dit":
            return "fp32" if recipe_overrides(self.recipe, "dit").get("train", {}).get("precision") == "fp32" else "bf16"
        return "bf16"

    def run(self) -> ResolvedRun:
        """The trainer's configs for this case, resolved as ``dinosae train`` resolves them."""
        train = {"batch_size": self.batch, "grad_checkpoint": self.checkpointing}
        if self.kind == "ae":
            return resolve_ae_run(RunRequest(self.preset, recipe=self.recipe, stage=self.stage,
                                             model={"image_size": self.image_size}, train={**train, "steps": _STEPS}))
        return resolve_dit_run(RunRequest(self.preset, recipe=self.recipe,
                                          train={**train, "precision": self.resolved_precision}),
                               dim=self.latent_dim or LATENT_DIMS[self.recipe], grid_size=self.image_size // 16,
                               num_classes=1000)

    @property
    def name(self) -> str:
        stage = f" stage {self.stage}" if self.kind == "ae" else ""
        return f"{self.kind}-{self.preset}{stage}"


@dataclass
class Training:
    """A trainer's step on fake (or real) tensors, with what the accounting needs to know about it."""

    step: Callable[[TrainState, object, torch.Generator], dict]
    state: TrainState
    make_batch: Callable[[int], object]
    modules: list[nn.Module]
    labels: Labels
    trainable: list[nn.Parameter]
    ema_numel: int
    label_names: tuple[str, ...]


@dataclass
class StepTrace:
    """What one traced step at ``batch`` kept for the backward (by label) and its peak beyond the weights."""

    batch: int
    saved: dict[str, int]
    peak: int

    @property
    def activations(self) -> int:
        return sum(self.saved.values())


@contextlib.contextmanager
def _autocast_as_on_a_gpu(precision: str) -> Iterator[None]:
    """The trainers choose autocast by device (bf16 on CUDA, none on the CPU); the trace runs on the CPU
    what a GPU would, inside the trainers' own forward (a backward under autocast would differ)."""

    def autocast(device: torch.device, _precision: str = "auto") -> contextlib.AbstractContextManager:
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    originals = ae_trainer.autocast, dit_trainer.autocast
    ae_trainer.autocast = dit_trainer.autocast = autocast
    try:
        yield
    finally:
        ae_trainer.autocast, dit_trainer.autocast = originals


def _adamw(params: list[nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float
           ) -> torch.optim.AdamW:
    # foreach: its temporaries span every parameter at once (the CPU default loops over them); the trainers'
    # fused AdamW on CUDA needs less, so the prediction errs high by at most these temporaries
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


def _cpu() -> DistEnv:
    return DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def build_training(case: MemoryCase, fake: FakeTensorMode | None = None) -> Training:
    """The trainer's step for ``case``: on fake tensors of ``fake``'s (weights never allocated), or real
    CPU tensors (random weights) when ``fake`` is None. The DiT's step runs on unit latents with labels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        with torch.device("meta") if fake is not None else contextlib.nullcontext():
            return _ae_training(case, fake) if case.kind == "ae" else _dit_training(case, fake)


def _ae_training(case: MemoryCase, fake: FakeTensorMode | None) -> Training:
    run = case.run()
    ae_config, train = run.model, run.train
    model = SphericalAutoencoder(ae_config)
    discriminator = DinoDiscriminator(model.latent_dim, ae_config.disc_depths) if train.gan_weight > 0 else None
    parts = [m for m in (model, discriminator) if m is not None]
    if fake is not None:
        fake_modules(parts, fake)
    params = ae_trainer.set_trainable(model, train)
    modules: dict[str, nn.Module] = {"model": model}
    optimizers = {"optimizer": _adamw(params, train.lr, train.betas, train.weight_decay)}
    if discriminator is not None:
        modules["discriminator"] = discriminator
        optimizers["disc_optimizer"] = _adamw(list(discriminator.parameters()), train.disc_lr, train.betas,
                                              train.weight_decay)
    state = TrainState(modules, optimizers, EMA(model, train.ema_decay), step=_STEPS - 1, extra={"skipped": []})
    with torch.device("cpu"):
        step = ae_trainer.AutoencoderStep(state, train, _cpu(), ae_config.image_size)
    if step.lpips is not None:
        parts.append(step.lpips)
        if fake is not None:
            fake_modules([step.lpips], fake)
    labels = Labels()
    labels.label(model.encoder.stem, "stem")
    for part in model.encoder.vit.modules():  # the encoder runs the ViT's blocks, not its forward
        labels.label(part, "vit")
    labels.label(model.decoder, "decoder")
    names = ["stem", "vit", "decoder"]
    if step.lpips is not None:
        labels.label(step.lpips, "lpips")
        names.append("lpips")
    if train.train_stem and train.align_weight > 0:
        teacher = model.encoder.teacher_tokens

        def labelled_teacher(images: torch.Tensor) -> torch.Tensor:
            with labels.within("alignment teacher"):
                return teacher(images)

        model.encoder.teacher_tokens = labelled_teacher
        names.append("alignment teacher")
    if discriminator is not None:
        labels.label(discriminator, "discriminator")
        names.append("discriminator")

    def make_batch(batch: int) -> ImageBatch:
        images = torch.rand(batch, 3, ae_config.image_size, ae_config.image_size)
        return ImageBatch(images, torch.zeros(batch, dtype=torch.long), [], [])

    trainable = params + (list(discriminator.parameters()) if discriminator is not None else [])
    return Training(step, state, make_batch, parts, labels, trainable, sum(p.numel() for p in params),
                    (*names, "other"))


def _dit_training(case: MemoryCase, fake: FakeTensorMode | None) -> Training:
    run = case.run()
    config, train = run.model, run.train
    dim = config.in_dim
    model = DiT(config)
    if fake is not None:
        fake_modules([model], fake)
    params = list(model.parameters())
    state = TrainState({"model": model}, {"optimizer": _adamw(params, train.lr, train.betas, train.weight_decay)},
                       EMA(model, train.ema_decay), step=_STEPS - 1)
    time_sampler = make_time_sampler(train.time_sampler, training_shift(train.shift, config.num_tokens, dim))
    step = dit_trainer.DiTStep(state, train, _cpu(), time_sampler)
    labels = Labels()
    for block in model.blocks:
        labels.label(block, "blocks")
    for embedder in (model.x_embedder, model.t_embedder, model.y_embedder):
        labels.label(embedder, "embeddings")
    labels.label(model.final_layer, "final layer")

    def make_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sphere_ops.random_uniform((batch, config.num_tokens), dim), torch.randint(0, 1000, (batch,))

    return Training(step, state, make_batch, [model], labels, params, sum(p.numel() for p in params),
                    ("embeddings", "blocks", "final layer", "other"))


def run_step(training: Training, batch: int, precision: str, live: LiveBytes | None = None) -> dict[str, int]:
    """One step of the trainer at ``batch`` (under ``live`` if given); returns the bytes its generator
    (or DiT) forward saved for the backward, by label."""
    exclude = module_storages(training.modules)
    saved = SavedBytes(training.labels, exclude, live)
    optimizer = training.state.optimizers["optimizer"]
    # Counting stops at the generator's update: what the discriminator's own step saves later is
    # covered by the peak.
    handle = optimizer.register_step_pre_hook(lambda *_: saved.stop())
    generator = step_generator(0, training.state.step, 0, torch.device("cpu"))
    try:
        with _autocast_as_on_a_gpu(precision), live or contextlib.nullcontext():
            data = training.make_batch(batch)
            saved.start()
            training.step(training.state, data, generator)
    finally:
        saved.stop()
        handle.remove()
    return dict(saved.by_label)


def trace(training: Training, batch: int, precision: str) -> StepTrace:
    """The saved bytes and the peak of live bytes (beyond what existed before) of one step at ``batch``."""
    live = LiveBytes(labels=training.labels)
    saved = run_step(training, batch, precision, live)
    return StepTrace(batch, {**dict.fromkeys(training.label_names, 0), **saved}, live.peak)


class Tracer:
    """Traced steps of one case at any batch: the models are built once on fake tensors, and one step
    runs untraced first so that AdamW's moments exist, as in a run's steady state.

    Example:
        >>> tracer = Tracer(MemoryCase("dit", "tiny", batch=2))
        >>> tracer.trace(2).saved["blocks"] > tracer.trace(1).saved["blocks"] > 0
        True
    """

    def __init__(self, case: MemoryCase) -> None:
        self.case = case
        self.precision = case.resolved_precision
        self.mode = FakeTensorMode()
        self.training = build_training(case, self.mode)
        with self.mode:
            run_step(self.training, 1, self.precision)
        self._traces: dict[int, StepTrace] = {}

    def trace(self, batch: int) -> StepTrace:
        if batch not in self._traces:
            with self.mode:
                self._traces[batch] = trace(self.training, batch, self.precision)
        return self._traces[batch]


@dataclass(frozen=True)
class MeasuredPeak:
    """A real step's peak: live tensor storage in all (``tensors``) and above what existed before the
    step (``tensors_step``), and the process's resident memory above its level before the step
    (``rss_step``; Linux only, else None)."""

    tensors: int
    tensors_step: int
    rss_step: int | None


def measure_peak(case: MemoryCase, seed: int = 0) -> MeasuredPeak:
    """The peak memory of one real training step of ``case`` on the CPU, what its prediction (without DDP
    and reserve) should match.

    Real random weights, the trainer's step (the second: AdamW's moments
    exist), every storage counted from the op that makes it until it is freed,
    on top of those alive before the step (weights, optimizer moments, EMA).
    The resident memory is an independent check of the same peak when glibc
    returns freed blocks at once (``MALLOC_MMAP_THRESHOLD_=65536``,
    ``MALLOC_TRIM_THRESHOLD_=0`` in the environment at start).
    """
    torch.manual_seed(seed)
    training = build_training(case)
    precision = case.resolved_precision
    run_step(training, case.batch, precision)
    before = {storage_key(t): t.untyped_storage().nbytes() for t in _state_tensors(training)}
    rss_before = _reset_peak_rss()
    live = LiveBytes()
    run_step(training, case.batch, precision, live)
    rss_step = None if rss_before is None else _peak_rss() - rss_before
    return MeasuredPeak(sum(before.values()) + live.peak, live.peak, rss_step)


def _reset_peak_rss() -> int | None:
    """The resident bytes now, after resetting the kernel's high-water mark (None where there is none)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _peak_rss() -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _state_tensors(training: Training) -> Iterator[torch.Tensor]:
    for module in training.modules:
        yield from module.parameters()
        yield from module.buffers()
    for optimizer in training.state.optimizers.values():
        for moments in optimizer.state.values():
            yield from (v for v in moments.values() if isinstance(v, torch.Tensor))
    yield from training.state.ema.shadow.values()
