"""Sampling: the arithmetic a user picks changes the pixels only by its rounding; the sharded job's result does
not depend on the number of ranks, and a rerun resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dinosae
from dinosae.cli import main
from dinosae.pipelines.sample import class_labels, generate_images

ENV = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")


def _sample_args(models, out, *extra):
    shard = [] if "--shard-size" in extra else ["--shard-size", "4"]
    return ["sample", "--ae", str(models / "ae"), "--dit", str(models / "dit"), "--out", str(out),
            "--num-samples", "10", "--steps", "2", "--batch-size", "2", "--device", "cpu", *shard, *extra]


def _one_process(*args):
    # The same environment (one thread each) as the ranks: thread counts change reduction orders, which
    # can move a pixel across a rounding boundary; ranks on one kind of device agree bit for bit.
    result = subprocess.run([sys.executable, "-m", "dinosae", *args], env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _two_ranks(*args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dinosae", *args]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("labels", ["equal", "random"])
def test_two_ranks_write_the_samples_of_one_process(models, tmp_path, labels):
    _one_process(*_sample_args(models, tmp_path / "one", "--labels", labels))
    _two_ranks(*_sample_args(models, tmp_path / "two", "--labels", labels, "--no-png"))
    with np.load(tmp_path / "one" / "samples.npz") as one, np.load(tmp_path / "two" / "samples.npz") as two:
        assert one["arr_0"].shape == (10, 64, 64, 3) and one["arr_0"].dtype == np.uint8
        assert np.array_equal(one["arr_0"], two["arr_0"]) and np.array_equal(one["labels"], two["labels"])
        if labels == "equal":
            assert one["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
        assert len({image.tobytes() for image in one["arr_0"]}) == 10  # every sample its own noise
    protocol = json.loads((tmp_path / "two" / "samples.json").read_text())
    assert (protocol["num"], protocol["labels"], protocol["steps"], protocol["cfg"]) == (10, labels, 2, 1.0)
    assert protocol["nfe"] == 2 and protocol["method"] == "euler"  # Euler: one evaluation per step
    assert len(list((tmp_path / "one" / "images").glob("*.png"))) == 10


def test_a_rerun_keeps_finished_shards_and_refuses_other_settings(models, tmp_path):
    out = tmp_path / "run"
    _one_process(*_sample_args(models, out))
    first = np.load(out / "samples.npz")["arr_0"]
    shards = sorted((out / "shards").glob("shard_*.npz"))
    assert len(shards) == 3
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    (out / "samples.npz").unlink()
    _one_process(*_sample_args(models, out))
    assert shards[0].stat().st_mtime_ns == kept and shards[1].is_file()
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], first)
    result = CliRunner().invoke(main, _sample_args(models, out, "--seed", "3"))
    assert result.exit_code != 0 and "holds samples made with other settings (seed: 0 -> 3)" in result.output
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], first)  # the refused run touched nothing


def test_two_ranks_encode_the_latents_of_one_process(models, photos, tmp_path):
    args = ["encode", "--ckpt", str(models / "ae"), "--data", str(photos["heldout"]), "--shard-size", "5",
            "--batch-size", "2", "--num-workers", "0", "--device", "cpu"]
    _one_process(*args, "--out", str(tmp_path / "one"))
    _two_ranks(*args, "--out", str(tmp_path / "two"))
    from dinosae.data.latents import LatentCache

    one, two = LatentCache(tmp_path / "one"), LatentCache(tmp_path / "two")
    assert len(one) == len(two) == 32 and one.meta["shard_counts"] == two.meta["shard_counts"]
    for i in range(len(one)):
        assert torch.equal(one[(i, False)][0], two[(i, False)][0]) and one[(i, False)][1] == two[(i, False)][1]


def test_a_failing_rank_stops_the_run_and_leaves_nothing_half_written(models, tmp_path):
    out = tmp_path / "run"
    worker = str(Path(__file__).with_name("failing_rank.py"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker,
               *_sample_args(models, out, "--shard-size", "2")]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "rank 1 lost its device" in result.stderr
    assert not (out / "samples.npz").exists() and not (out / "samples.json").exists()
    for shard in (out / "shards").glob("shard_*.npz"):  # every shard under its final name is whole
        with np.load(shard) as stored:
            assert stored["images"].shape[1:] == (64, 64, 3)
    _one_process(*_sample_args(models, out, "--shard-size", "2"))  # the rerun finishes what is missing
    _one_process(*_sample_args(models, tmp_path / "clean", "--shard-size", "2"))
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], np.load(tmp_path / "clean" / "samples.npz")["arr_0"])


def _nan_dit(models, tmp_path):
    from dinosae.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    source = load_checkpoint(models / "dit")
    weights = {k: v.clone() for k, v in source.model.items()}
    weights[next(k for k in weights if k.endswith("weight"))].fill_(float("nan"))
    # save_checkpoint refuses non-finite weights; a file from elsewhere can still hold them
    checkpoint = Checkpoint(step=1, model={k: torch.zeros_like(v) for k, v in weights.items()}, meta=source.meta)
    path = save_checkpoint(tmp_path / "nan_dit", checkpoint)
    from safetensors.torch import save_file

    save_file(weights, path / "model.safetensors")
    return tmp_path / "nan_dit"


def test_a_dit_with_nan_weights_writes_no_sample(models, tmp_path):
    from dinosae.pipelines.sample import sample_command

    with pytest.raises(FloatingPointError, match="are not finite"):
        sample_command(models / "ae", _nan_dit(models, tmp_path), tmp_path / "out", num=4, steps=1, batch_size=2,
                       device="cpu", progress=False)
    assert not list((tmp_path / "out").rglob("*.npz")) and not list((tmp_path / "out").rglob("*.png"))


def test_class_names_from_files_never_leave_the_output_folder(models, tmp_path):
    from dinosae.io.checkpoint import load_checkpoint, save_checkpoint
    from dinosae.pipelines.sample import sample_command

    crafted = load_checkpoint(models / "dit", with_state=False)
    crafted.meta["classes"] = ["../../escaped", "/etc/cron.d/x", ".."]
    save_checkpoint(tmp_path / "dit", crafted)
    out = tmp_path / "deep" / "out"
    sample_command(models / "ae", tmp_path / "dit", out, num=3, steps=1, batch_size=3, device="cpu", progress=False)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert len([p for p in written if p.parts[:3] == ("deep", "out", "images")]) == 3
    assert all(p.parts[:2] == ("deep", "out") for p in written), written


def test_a_damaged_shard_is_drawn_again(models, tmp_path):
    out = tmp_path / "run"
    _one_process(*_sample_args(models, out))
    first = np.load(out / "samples.npz")["arr_0"]
    shard = out / "shards" / "shard_00001.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    (out / "samples.npz").unlink()
    _one_process(*_sample_args(models, out))
    assert np.array_equal(np.load(out / "samples.npz")["arr_0"], first)


# ---------------------------------------------------------------- images from a DiT and a decoder


@pytest.fixture(scope="module")
def pair():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = dinosae.create_model("ae-tiny").eval()
    dit = dinosae.create_model("dit-tiny", in_dim=192, grid_size=4, num_classes=3, hidden_size=32, depth=1,
                               num_heads=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in dit.parameters():  # adaLN-Zero starts at a zero field
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return ae, dit.eval()


def test_bf16_samples_stay_close_to_float32_ones(pair):
    ae, dit = pair
    labels = class_labels(8, 3)
    exact = generate_images(ae, dit, labels, steps=8, precision="fp32", progress=False).astype(np.float64)
    fast = generate_images(ae, dit, labels, steps=8, precision="bf16", progress=False).astype(np.float64)
    psnr = 10 * np.log10(255**2 / ((exact - fast) ** 2).mean())
    assert psnr > 40, psnr  # measured 51 dB: a grey level or two on a few pixels
    assert not np.array_equal(exact, fast)  # bf16 did run


def test_an_unknown_precision_is_refused(pair):
    ae, dit = pair
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        generate_images(ae, dit, class_labels(1, 3), steps=1, precision="fp8", progress=False)


@pytest.mark.parametrize("fields, message", [
    (dict(num=10**9, shard_size=4), "make 250,000,000 shards, more than 1,000,000: pass a larger --shard-size"),
    (dict(num=10, steps=10**9), "steps must be at most 100,000"),
    (dict(num=0), "num must be at least 1"),
])
def test_requests_that_would_allocate_before_failing_are_refused_up_front(fields, message):
    import time

    from dinosae.pipelines.sample import SampleProtocol

    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        SampleProtocol(ae="ae", dit="dit", **fields)
    assert time.perf_counter() - start < 1


def test_a_billion_samples_need_no_list_of_a_billion_labels():
    from dinosae.pipelines.sample import class_labels

    tail = class_labels(3, 1000, start=10**9 - 3, mode="random", seed=1)
    assert tail.shape == (3,) and torch.equal(tail, class_labels(3, 1000, start=10**9 - 3, mode="random", seed=1))
    assert class_labels(2, 1000, start=10**9).tolist() == [0, 1]
