"""Preemption: a signal makes the run checkpoint after its step and exit 75; the same command with
``--resume auto`` then ends where an uninterrupted run ends, bit for bit, on one process and on two ranks
started as ``srun`` starts them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import dinosae_command, run_dinosae

from dinosae.io.checkpoint import load_checkpoint
from dinosae.train.preemption import PREEMPTED_EXIT_CODE


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


def _interrupt(args, run: Path, after_step: int) -> subprocess.CompletedProcess:
    """Start ``dinosae ARGS``; once it logged ``after_step``, send it SIGTERM; wait for it to end."""
    command, env = dinosae_command(*args)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _logged_steps(run) < after_step:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _assert_same_run(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first.step == second.step
    for part in ("model", "ema"):
        for name, value in getattr(first, part).items():
            assert torch.equal(value, getattr(second, part)[name]), (part, name)


def test_sigterm_checkpoints_and_resume_auto_finishes_as_an_uninterrupted_run(tmp_path, photos):
    config = tmp_path / "fast.json"
    config.write_text('{"train": {"lpips_weight": 0.0, "image_every": 1000, "num_workers": 0, "log_every": 1, '
                      '"ckpt_every": 1000}}')
    common = ["train", "ae", "--data", photos["heldout"], "--preset", "tiny", "--steps", "12", "--batch-size", "4",
              "--device", "cpu", "--config", config, "--resume", "auto"]
    run_dinosae(*common, "--out", tmp_path / "straight")
    stopped = _interrupt([*common, "--out", tmp_path / "run"], tmp_path / "run", after_step=3)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    assert "SIGTERM received: stopped after step" in stopped.stderr
    assert 3 <= load_checkpoint(tmp_path / "run").step < 12
    run_dinosae(*common, "--out", tmp_path / "run")
    _assert_same_run(tmp_path / "straight", tmp_path / "run")
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 13))


def _srun_tasks(args, ranks: int) -> list[subprocess.Popen]:
    """``dinosae ARGS`` as ``srun`` would start it: one process per task, SLURM's variables in its environment."""
    command, env = dinosae_command(*args)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [subprocess.Popen(command, env=dict(env, SLURM_STEP_NUM_TASKS=str(ranks), SLURM_PROCID=str(rank),
                                               SLURM_LOCALID=str(rank), MASTER_ADDR="127.0.0.1",
                                               MASTER_PORT=str(port)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(ranks)]


@pytest.mark.slow  # two srun-like tasks training through the command line
def test_a_signal_to_one_srun_task_stops_every_rank_after_the_same_step(tmp_path, vmf_latents):
    """SLURM signals each task of an srun step; here only one of two gets it, the hardest case."""
    common = ["train", "dit", "--latents", vmf_latents, "--preset", "tiny", "--steps", "300", "--batch-size", "64",
              "--num-workers", "0", "--device", "cpu", "--resume", "auto"]
    run_dinosae(*common, "--out", tmp_path / "straight", ranks=2)  # torchrun: the same ranks, the same run
    tasks = _srun_tasks([*common, "--out", tmp_path / "run"], ranks=2)
    deadline = time.monotonic() + 240
    while _logged_steps(tmp_path / "run") < 3:
        assert all(task.poll() is None for task in tasks) and time.monotonic() < deadline
        time.sleep(0.05)
    tasks[1].send_signal(signal.SIGUSR1)
    results = [task.communicate(timeout=240) for task in tasks]
    assert [task.returncode for task in tasks] == [PREEMPTED_EXIT_CODE] * 2, results[0][1][-3000:]
    steps = {int(err.split("stopped after step ")[1].split()[0]) for _, err in results}
    assert len(steps) == 1 and steps == {load_checkpoint(tmp_path / "run").step}
    for task in _srun_tasks([*common, "--out", tmp_path / "run"], ranks=2):
        _, err = task.communicate(timeout=240)
        assert task.returncode == 0, err[-3000:]
    _assert_same_run(tmp_path / "straight", tmp_path / "run")


SECOND_SIGNAL = """
import os, signal, sys
from dinosae.runtime import init_distributed
from dinosae.train.preemption import PreemptionWatch

with PreemptionWatch(init_distributed("cpu")) as watch:
    os.kill(os.getpid(), signal.SIGTERM)
    assert watch.should_stop()  # the stop is decided: the last checkpoint is being written
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal 300 ms later, during the write
    print("the checkpoint was written", flush=True)
sys.exit(75)
"""


def test_a_second_signal_during_the_last_checkpoint_still_exits_75():
    import sys

    result = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True, timeout=120)
    assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-2000:]
    assert "the checkpoint was written" in result.stdout


MID_STEP = """
import os, signal, time
from dinosae.runtime import init_distributed
from dinosae.train.preemption import PreemptionWatch

with PreemptionWatch(init_distributed("cpu")) as watch:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # twice before the step ends: stop at once, no checkpoint
    time.sleep(5)
print("not reached")
"""


def test_a_second_signal_before_the_stop_is_decided_stops_at_once():
    import sys

    result = subprocess.run([sys.executable, "-c", MID_STEP], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGTERM and "not reached" not in result.stdout
