"""Where and how code runs: the device, mixed precision, and the process group of ``torchrun``
(one process per GPU with NCCL, or per CPU worker with gloo)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from dinosae.config.training import PRECISIONS, SAMPLING_PRECISIONS

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Example:
        >>> env = init_distributed("cpu")
        >>> (env.rank, env.world_size, env.is_main)
        (0, 1, True)
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the main rank only; every rank returns its result, or raises its error.

        Work that only one process may do (taking a lock, writing a manifest) must not leave the
        other ranks waiting at a barrier when it fails: they get the same error and stop too.

        Example:
            >>> init_distributed("cpu").on_main(lambda: 42)
            42
        """
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as caught:  # handed to every rank below
                error = caught
        if self.distributed:
            box = [(result, error)]
            dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
            result, error = box[0]
        if error is not None:
            raise error
        return result


def pick_device(name: str | None) -> torch.device:
    """``cuda`` when asked for or available (``None``), else ``cpu``; a clear error if CUDA is missing."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available")
    return device


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The forward pass's precision: ``"bf16"`` autocast, ``"fp32"`` none, or ``"auto"``: bf16 on CUDA and
    full precision on the CPU (bf16 matmuls are slow there, and exact resume wants float32)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return contextlib.nullcontext()


def use_tf32(device: torch.device, enabled: bool = True) -> None:
    """Let float32 matmuls and convolutions on CUDA use TF32 (10-bit mantissa products, float32 sums),
    as DiT, LightningDiT and RAE train; nothing changes on the CPU."""
    if device.type == "cuda":
        precision = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.fp32_precision = precision


@contextlib.contextmanager
def sampling_precision(device: torch.device, precision: str = "auto") -> Iterator[None]:
    """Inference in ``"bf16"`` autocast, float32 with TF32 matmuls (``"tf32"``) or exact float32
    (``"fp32"``); ``"auto"`` is bf16 on CUDA and float32 on the CPU. TF32 settings are restored after.

    Example:
        >>> with sampling_precision(torch.device("cpu"), "bf16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {SAMPLING_PRECISIONS}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.fp32_precision
    use_tf32(device, precision == "tf32")
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.fp32_precision = before


def adopt_slurm_step() -> None:
    """Describe the process group as torchrun would when ``srun`` started one process per task.

    Only the tasks of an ``srun`` step (``SLURM_STEP_NUM_TASKS`` > 1) count, not a batch script (its
    environment names the job's task count too). Launched so, the tasks receive SLURM's signals
    themselves (torchrun's workers do not: they run in sessions of their own). The rendezvous
    needs ``MASTER_ADDR`` (the first node); ``MASTER_PORT`` defaults to 29500.

    Example:
        >>> adopt_slurm_step()  # outside an srun step: nothing changes
        >>> "WORLD_SIZE" in os.environ
        False
    """
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if "WORLD_SIZE" in os.environ or tasks <= 1:
        return
    if not os.environ.get("MASTER_ADDR"):
        raise ValueError("srun started this as one of several tasks, but MASTER_ADDR is not set: export "
                         "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.update(WORLD_SIZE=str(tasks), RANK=os.environ["SLURM_PROCID"],
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` (or an ``srun`` step, see :func:`adopt_slurm_step`)
    describes in the environment, if any."""
    adopt_slurm_step()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank if world_size > 1 else (chosen.index or 0))
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def mean_across_ranks(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average logged scalars over ranks, so the log shows the global batch; NaNs (a rank with no
    sample of some kind) are left out of a mean. Every rank must pass the same names."""
    if not env.distributed or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=env.device)
    finite = torch.isfinite(tensor)
    sums = torch.stack([torch.where(finite, tensor, 0.0), finite.double()])
    dist.all_reduce(sums)
    return dict(zip(names, (sums[0] / sums[1]).tolist()))


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
