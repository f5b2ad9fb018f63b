"""The trainers' steps traced on fake CPU tensors save and hold exactly what real tensors do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dinosae.bench.trainer_steps import MemoryCase, Tracer, build_training, run_step, trace

AE_TINY = dict(kind="ae", preset="tiny", image_size=64, ddp=False, reserve_gib=0.0)


def test_the_measured_tensor_peak_is_the_processs_resident_peak():
    """An independent check of the measurement: the resident memory of a fresh process whose allocator
    returns freed blocks at once rises during the step as much as the live tensor storage does."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc")
    code = ("import json; from dinosae.bench.trainer_steps import MemoryCase, measure_peak; "
            f"p = measure_peak(MemoryCase(**{dict(AE_TINY, batch=8)!r})); print(json.dumps([p.tensors_step, p.rss_step]))")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", TRITON_INTERPRET="1",
               PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    tensors, rss = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.9 * tensors <= rss <= 1.1 * tensors, (tensors, rss)


def test_fake_tensors_save_and_hold_exactly_what_real_tensors_do():
    case = MemoryCase(**AE_TINY, stage=2, batch=3)
    torch.manual_seed(0)
    real = build_training(case)
    run_step(real, 3, "bf16")  # AdamW's moments, as in the tracer's steady state
    real_step, fake_step = trace(real, 3, "bf16"), Tracer(case).trace(3)
    assert fake_step.saved == real_step.saved and fake_step.peak == real_step.peak
    assert all(real_step.saved[label] > 0 for label in ("stem", "vit", "decoder", "lpips", "discriminator"))


def test_saved_bytes_grow_linearly_with_the_batch_by_module():
    tracer = Tracer(MemoryCase(**AE_TINY, stage=1, batch=4))
    saved = [tracer.trace(batch).saved for batch in (1, 2, 3, 5)]
    for label in saved[0]:
        per_image = saved[1][label] - saved[0][label]
        for batch, counts in zip((3, 5), saved[2:]):
            assert counts[label] == saved[0][label] + (batch - 1) * per_image, label
    assert saved[0]["decoder"] > 0 and saved[0]["alignment teacher"] == 0  # the teacher runs without gradients
