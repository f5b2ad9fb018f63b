"""Preemption: a signal makes the run checkpoint after its step and exit 75; the same command with
``--resume auto`` then ends where an uninterrupted run ends, bit for bit, on one process and on two ranks."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import torch
from helpers import dinosae_command, run_dinosae

from dinosae.io.checkpoint import load_checkpoint
from dinosae.train.preemption import PREEMPTED_EXIT_CODE


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


def _interrupt(args, run: Path, after_step: int, ranks: int = 1) -> subprocess.CompletedProcess:
    """Start ``dinosae ARGS``; once it logged ``after_step``, send SIGTERM to it (one process) or SIGUSR1 to
    one of its ranks only (the hardest case: the others must learn of it); wait for it to end."""
    command, env = dinosae_command(*args, ranks=ranks)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _logged_steps(run) < after_step:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    if ranks == 1:
        process.send_signal(signal.SIGTERM)
    else:
        workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == ranks
        subprocess.run(["kill", "-USR1", workers[-1]], check=True)
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


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path, vmf_latents):
    common = ["train", "dit", "--latents", vmf_latents, "--preset", "tiny", "--steps", "300", "--batch-size", "64",
              "--num-workers", "0", "--device", "cpu", "--resume", "auto"]
    run_dinosae(*common, "--out", tmp_path / "straight", ranks=2)
    stopped = _interrupt([*common, "--out", tmp_path / "run"], tmp_path / "run", after_step=3, ranks=2)
    assert stopped.returncode != 0 and stopped.stderr.count("stopped after step") == 2, stopped.stderr[-3000:]
    assert 3 <= load_checkpoint(tmp_path / "run").step < 300
    run_dinosae(*common, "--out", tmp_path / "run", ranks=2)
    _assert_same_run(tmp_path / "straight", tmp_path / "run")
