"""Where and how code runs: the device, mixed precision, and the process group (one process here; the ranks of
torchrun are tested where a job runs on them)."""

from __future__ import annotations

import os

import pytest
import torch

from dinosae.runtime import (adopt_slurm_step, autocast, init_distributed, mean_across_ranks, pick_device,
                             sampling_precision)


def test_on_main_returns_the_work_or_raises_its_error():
    env = init_distributed("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)
    assert env.on_main(lambda: 42) == 42
    with pytest.raises(KeyError, match="boom"):
        env.on_main(lambda: {}["boom"])
    assert mean_across_ranks({"loss": 1.5}, env) == {"loss": 1.5}


def test_a_missing_cuda_device_is_refused_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pick_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda was requested but no CUDA device is available"):
        pick_device("cuda")


def test_precisions():
    cpu = torch.device("cpu")
    a = torch.ones(2, 2)
    with autocast(cpu, "auto"):
        assert (a @ a).dtype == torch.float32  # exact float32 on the CPU, so that a resume repeats a run
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast(cpu, "fp8")
    with sampling_precision(cpu, "tf32"):
        assert (a @ a).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        with sampling_precision(cpu, "int8"):
            pass


def test_an_srun_step_describes_the_process_group_as_torchrun_would(monkeypatch):
    # A copy of the environment for this test alone: what the function sets must not reach the next test.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")})
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        adopt_slurm_step()
    monkeypatch.setenv("MASTER_ADDR", "node001")
    adopt_slurm_step()
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["MASTER_PORT"]) == (
        "8", "5", "1", "29500")
