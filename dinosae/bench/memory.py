"""``dinosae bench memory``: the memory of a training step per GPU, predicted from a trace on the CPU.

The trainers' own step (``AutoencoderStep``, ``DiTStep``: forward, backward,
clipping, AdamW, EMA, and the discriminator's update) runs on fake CPU tensors
(``dinosae.bench.accounting``) of the real model sizes, under bf16 autocast
where the GPU run would use it. The trace counts, at the real per-GPU batch:

- **activations**: bytes saved for the backward pass by the generator's (or
  the DiT's) forward, by top-level module, weights excluded;
- **transient**: the most bytes alive at any point of the step beyond those
  activations (gradients in flight, recomputed blocks, working copies, the
  optimizer's foreach temporaries, the discriminator's own update). Parameter
  gradients made before that point are counted in it as well as under
  gradients, so the sum errs on the high side, by at most the gradients.

and the prediction is their sum with the weights, gradients (float32),
AdamW's two float32 moments and the EMA's float32 copy per trainable
parameter, DDP's gradient buckets (one more copy of the gradients, as
``DistributedDataParallel`` keeps them by default) and a stated ``reserve``
for what no tensor shows (CUDA context, cuBLAS/cuDNN workspaces, NCCL
buffers). The caching allocator's fragmentation is not counted. These are
predictions: GPU kernels may save what the CPU's do not (cuDNN workspaces,
other attention kernels).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from dinosae.bench.accounting import SavedBytes, fake_modules, storage_key
from dinosae.bench.trainer_steps import MAX_BATCH, MemoryCase, Tracer
from dinosae.config import AETrainConfig, model_config
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.vit import RandomTeacherWarning
from dinosae.train import autoencoder as ae_trainer
from dinosae.train.losses import l1_loss

GIB = 1 << 30


@dataclass
class Prediction:
    """The predicted memory of one GPU for a ``MemoryCase``, in bytes, and the largest batch that fits."""

    case: MemoryCase
    saved_per_image: dict[str, int]
    saved_fixed: dict[str, int]
    weights: int
    gradients: int
    adamw: int
    ema: int
    ddp_buckets: int
    activations: int
    transient: int
    reserve: int
    gpu_memory: int | None
    max_batch: int | None

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.adamw + self.ema + self.ddp_buckets + self.activations
                + self.transient + self.reserve)


def _bytes(params: list[nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _weights(modules: list[nn.Module]) -> int:
    storages = {storage_key(t): t.untyped_storage().nbytes() for m in modules for t in (*m.parameters(), *m.buffers())}
    return sum(storages.values())


def predict(case: MemoryCase, gpu_memory_gib: float | None = 80.0, tracer: Tracer | None = None) -> Prediction:
    """The predicted per-GPU peak of ``case``, saved bytes per image by module, and the largest per-GPU
    batch whose prediction fits in ``gpu_memory_gib`` (0 if none does; not searched for when None).

    Saved bytes per image are the difference of traces at batch 2 and 1, and
    ``saved_fixed`` what does not grow with the batch (under autocast, the bf16
    copies of frozen weights); the peak is traced at the case's own batch.

    Example:
        >>> p = predict(MemoryCase("dit", "tiny", batch=4, ddp=False, reserve_gib=0.0), gpu_memory_gib=1.0)
        >>> p.total == p.weights + p.gradients + p.adamw + p.ema + p.activations + p.transient
        True
        >>> p.max_batch > 4
        True
    """
    tracer = tracer or Tracer(case)
    training = tracer.training
    one, two, at = tracer.trace(1), tracer.trace(2), tracer.trace(case.batch)
    per_image = {k: two.saved.get(k, 0) - one.saved.get(k, 0) for k in training.label_names}
    fixed = {k: one.saved.get(k, 0) - per_image[k] for k in training.label_names}
    gradients = _bytes(training.trainable)
    fixed_parts = {
        "weights": _weights(training.modules),
        "gradients": gradients,
        "adamw": 2 * gradients,
        "ema": 4 * training.ema_numel,
        "ddp_buckets": gradients if case.ddp else 0,
        "reserve": int(case.reserve_gib * GIB),
    }
    budget = None if gpu_memory_gib is None else int(gpu_memory_gib * GIB)

    def total_at(batch: int) -> int:
        step = tracer.trace(batch)
        return sum(fixed_parts.values()) + max(step.peak, step.activations)

    return Prediction(case=case, saved_per_image=per_image, saved_fixed=fixed, activations=at.activations,
                      transient=max(0, at.peak - at.activations), gpu_memory=budget,
                      max_batch=None if budget is None else _largest_batch(total_at, budget), **fixed_parts)


def _largest_batch(total_at: Callable[[int], int], budget: int) -> int:
    """The largest batch whose ``total_at`` fits ``budget``: steps along the line through the last two
    traced batches, then interpolation between the largest batch that fits and the smallest that does not."""
    low, low_total = 1, total_at(1)
    if low_total > budget:
        return 0
    slope = max(1, total_at(2) - low_total)
    high, high_total = None, 0
    while high is None or high - low > 1:
        if high is None:
            batch = min(MAX_BATCH, low + max(1, (budget - low_total) // slope))
            if batch == low:
                return low
        else:
            batch = low + (budget - low_total) * (high - low) // max(1, high_total - low_total)
            batch = min(max(batch, low + 1), high - 1)
        total = total_at(batch)
        if total <= budget:
            slope = max(1, (total - low_total) // (batch - low))
            low, low_total = batch, total
        else:
            high, high_total = batch, total
    return low


def reconstruction_saved(preset: str = "B", image_size: int = 256, batch: int = 1) -> int:
    """Bytes saved for the backward by the autoencoder's reconstruction path alone (stem, frozen ViT,
    decoder, L1; no LPIPS, alignment or discriminator; stage 1, no checkpointing) under bf16 autocast,
    counted as the issue "Training at cluster scale" counts them: every storage once, weights included.

    Example:
        >>> reconstruction_saved("tiny", image_size=64) > 0
        True
    """
    mode = FakeTensorMode()
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", RandomTeacherWarning)
        model = SphericalAutoencoder(model_config(f"ae-{preset}", image_size=image_size)[1])
    fake_modules([model], mode)
    train = AETrainConfig(stage=1)
    ae_trainer.set_trainable(model, train)
    with mode, SavedBytes() as saved, torch.autocast("cpu", dtype=torch.bfloat16):
        images = torch.rand(batch, 3, image_size, image_size)
        reconstruction, _ = ae_trainer.TrainForward(model, train)(images)
        l1_loss(reconstruction, images)
    return saved.total


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _settings(case: MemoryCase) -> str:
    ckpt = "on" if case.checkpointing else "off"
    return f"{case.recipe}, {case.resolved_precision}, {case.batch} per GPU, checkpointing {ckpt}"


def format_prediction(prediction: Prediction) -> str:
    """A table for people: saved bytes per image by module, then the predicted peak, line by line."""
    case = prediction.case
    lines = [f"{case.name} at {case.image_size} px ({_settings(case)}): predicted from a CPU trace", "",
             "| module | saved per image (MiB) | saved per step, fixed (MiB) |", "|---|---|---|"]
    for label, value in prediction.saved_per_image.items():
        lines.append(f"| {label} | {value / 2**20:.1f} | {prediction.saved_fixed[label] / 2**20:.1f} |")
    per_image = sum(prediction.saved_per_image.values())
    lines += [f"| total | {per_image / 2**20:.1f} | {sum(prediction.saved_fixed.values()) / 2**20:.1f} |", "",
              "| per GPU | GiB |", "|---|---|"]
    for name, value in _lines(prediction):
        lines.append(f"| {name} | {_gib(value)} |")
    lines.append(f"| predicted peak | {_gib(prediction.total)} |")
    if prediction.gpu_memory is not None:
        lines.append(f"| largest batch per GPU in {_gib(prediction.gpu_memory)} GiB | {prediction.max_batch} |")
    return "\n".join(lines)


def _lines(prediction: Prediction) -> list[tuple[str, int]]:
    return [("weights", prediction.weights), ("gradients (float32)", prediction.gradients),
            ("AdamW moments (2 x float32)", prediction.adamw), ("EMA (float32)", prediction.ema),
            ("DDP gradient buckets", prediction.ddp_buckets),
            (f"activations (saved for backward, batch {prediction.case.batch})", prediction.activations),
            ("transient (largest beyond the activations)", prediction.transient),
            ("reserve (CUDA context, workspaces, NCCL; stated)", prediction.reserve)]


def to_json(prediction: Prediction) -> dict:
    """The prediction as one JSON-ready object (bytes, and GiB where the key says so)."""
    return {"case": asdict(prediction.case), "precision": prediction.case.resolved_precision,
            "saved_per_image": prediction.saved_per_image, "saved_fixed": prediction.saved_fixed,
            "saved_per_image_gib": sum(prediction.saved_per_image.values()) / GIB,
            **{key: getattr(prediction, key) for key in ("weights", "gradients", "adamw", "ema", "ddp_buckets",
                                                         "activations", "transient", "reserve", "gpu_memory",
                                                         "max_batch")},
            "predicted_peak": prediction.total, "predicted_peak_gib": prediction.total / GIB}


def summary_row(prediction: Prediction) -> str:
    """One markdown row: model, stage, recipe, precision, batch, checkpointing, GiB per part, largest batch."""
    case, p = prediction.case, prediction
    state = p.weights + p.gradients + p.adamw + p.ema + p.ddp_buckets
    return (f"| {case.kind}-{case.preset} | {case.stage if case.kind == 'ae' else '-'} | {case.recipe} | "
            f"{case.resolved_precision} | {case.batch} | {'on' if case.checkpointing else 'off'} | "
            f"{_gib(sum(p.saved_per_image.values()))} | {_gib(state)} | {_gib(p.activations)} | "
            f"{_gib(p.transient)} | {_gib(p.total)} | {'yes' if p.total <= p.gpu_memory else 'no'} | "
            f"{p.max_batch} |")


SUMMARY_HEADER = ("| model | stage | recipe | precision | batch per GPU | checkpointing | saved per image | "
                  "weights + grads + AdamW + EMA + DDP | activations | transient | predicted peak | fits | "
                  "largest batch |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
