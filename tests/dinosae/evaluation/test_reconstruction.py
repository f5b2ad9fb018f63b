"""Reconstruction metrics: per-image values averaged in image order, whatever the number of ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dinosae.metrics import directional_variation

ENV = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")


def _eval(ranks: int, *args: str) -> dict:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    result = subprocess.run([sys.executable, *launcher, "-m", "dinosae", "eval", "recon", *args, "--json"], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout  # one JSON object: only rank 0 prints
    return json.loads(lines[0])


def test_two_ranks_measure_what_one_process_measures(models, photos):
    args = ("--ckpt", str(models / "ae"), "--data", str(photos["heldout"]), "--batch-size", "3", "--device", "cpu")
    one, two = _eval(1, *args), _eval(2, *args)
    assert one == two
    assert one["images"] == 32 and {"stripe_score", "stripe_rows", "stripe_cols"} <= set(one)
    assert one["stripe_score"] == pytest.approx(one["stripe_rows"] / one["stripe_cols"])


def test_stripes_raise_the_stripe_score():
    """Horizontal stripes added to smooth images raise row variation against column variation."""
    coarse = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    striped = images.clone()
    striped[:, :, ::2] = (striped[:, :, ::2] + 0.3).clamp(0, 1)
    original, recon = directional_variation(images).sum(0), directional_variation(striped).sum(0)
    score = (recon[0] / original[0]) / (recon[1] / original[1])
    assert score > 1.5
    torch.testing.assert_close(directional_variation(images.transpose(2, 3)), directional_variation(images).flip(1))


def test_solid_images_give_an_undefined_stripe_score_not_a_crash(models, tmp_path):
    import math

    from PIL import Image

    from dinosae.evaluation.reconstruction import reconstruction_metrics
    from dinosae.models.loading import load_model

    for i, size in enumerate([(1, 1), (64, 64)]):
        Image.new("RGB", size, (30 * i, 120, 200)).save(tmp_path / f"{i}.png")
    metrics = reconstruction_metrics(load_model(models / "ae", kind="autoencoder"), tmp_path, num_workers=0,
                                     progress=False)
    assert metrics["images"] == 2 and math.isfinite(metrics["psnr"])
    assert math.isnan(metrics["stripe_score"]) and math.isnan(metrics["stripe_rows"])
