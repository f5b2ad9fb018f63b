"""``dinosae bench memory``: its prediction matches a real step's peak on the CPU, and its parts follow the
settings."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from dinosae.bench import memory
from dinosae.bench.memory import predict
from dinosae.bench.trainer_steps import MemoryCase, Tracer, measure_peak
from dinosae.cli import main

AE_TINY = dict(kind="ae", preset="tiny", image_size=64, ddp=False, reserve_gib=0.0)
DIT_TINY = dict(kind="dit", preset="tiny", ddp=False, reserve_gib=0.0)


@pytest.mark.parametrize("settings", [dict(AE_TINY, stage=1, batch=8), dict(AE_TINY, stage=2, batch=4),
                                      dict(DIT_TINY, batch=16)], ids=["ae-stage-1", "ae-stage-2", "dit"])
def test_the_prediction_is_within_15_percent_of_a_real_steps_peak(settings):
    """The formula (weights + gradients + AdamW + EMA + traced activations and transient) against the
    live tensor storage of the trainer's real step on the CPU, bf16 autocast, random weights."""
    case = MemoryCase(**settings)
    predicted = predict(case, gpu_memory_gib=None).total
    measured = measure_peak(case).tensors
    assert 0.85 * measured <= predicted <= 1.15 * measured, (predicted, measured)


@pytest.mark.parametrize("settings", [dict(AE_TINY, stage=3, batch=4), dict(DIT_TINY, batch=4)], ids=["ae", "dit"])
def test_checkpointing_cuts_what_the_model_keeps(settings):
    plain = predict(MemoryCase(**settings), gpu_memory_gib=None)
    recomputed = predict(MemoryCase(**settings, checkpointing=True), gpu_memory_gib=None)
    part = "decoder" if settings["kind"] == "ae" else "blocks"
    assert recomputed.saved_per_image[part] < 0.6 * plain.saved_per_image[part]
    assert recomputed.total < plain.total and recomputed.activations < plain.activations
    assert recomputed.weights == plain.weights and recomputed.adamw == plain.adamw


def test_the_largest_batch_is_the_last_that_fits():
    case = MemoryCase(**DIT_TINY, batch=2)
    tracer = Tracer(case)
    prediction = predict(case, gpu_memory_gib=0.25, tracer=tracer)
    states = prediction.weights + prediction.gradients + prediction.adamw + prediction.ema

    def total(batch):
        step = tracer.trace(batch)
        return states + max(step.peak, step.activations)

    assert prediction.max_batch > 2
    assert total(prediction.max_batch) <= prediction.gpu_memory < total(prediction.max_batch + 1)


def test_stages_count_their_parts():
    """Stage 1 trains the stem (AdamW for it), stage 2 adds the discriminator, stages 3-4 train the decoder only."""
    counts = {stage: predict(MemoryCase(**AE_TINY, stage=stage, batch=2), gpu_memory_gib=None) for stage in (1, 2, 3)}
    assert counts[2].gradients > counts[1].gradients > counts[3].gradients
    assert counts[2].saved_per_image["discriminator"] > 0 and "discriminator" not in counts[1].saved_per_image
    assert counts[3].saved_per_image["stem"] == counts[3].saved_per_image["vit"] == 0


def test_the_hae_dit_runs_in_float32_and_keeps_more():
    bf16 = predict(MemoryCase(**DIT_TINY, batch=2), gpu_memory_gib=None)
    fp32 = predict(MemoryCase(**DIT_TINY, batch=2, recipe="hae", latent_dim=768), gpu_memory_gib=None)
    assert fp32.case.resolved_precision == "fp32" and bf16.case.resolved_precision == "bf16"
    assert fp32.saved_per_image["blocks"] > 1.5 * bf16.saved_per_image["blocks"]


def test_the_lean_reconstruction_path_keeps_under_two_gib_per_image_at_256_px():
    """The issue's count for the B preset (stem, ViT, decoder, L1 under bf16, batch 1): 3.38 GiB before."""
    assert memory.reconstruction_saved("B", 256) <= 2.0 * memory.GIB


def test_cli_prints_a_table_and_json():
    args = ["bench", "memory", "--kind", "dit", "--preset", "tiny", "--batch-size", "4", "--gpu-memory", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| blocks |" in result.output and "predicted peak" in result.output
    result = CliRunner().invoke(main, [*args, "--grad-checkpoint", "--no-ddp", "--json"])
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["case"]["checkpointing"] is True and payload["ddp_buckets"] == 0
    assert payload["predicted_peak"] == sum(payload[k] for k in ("weights", "gradients", "adamw", "ema", "activations",
                                                                  "transient", "reserve"))


@pytest.mark.parametrize("args, message", [
    (["--kind", "ae", "--preset", "XL"], "ae has no preset 'XL'"),
    (["--recipe", "hae", "--stage", "3"], "the hae recipe has no autoencoder stage 3 (its stages: [1, 2])"),
    (["--preset", "tiny", "--image-size", "100"], "multiple of 16"),
    (["--batch-size", "0"], "batch-size"),
    (["--preset", "tiny", "--batch-size", "1000000000"], "batch must be in [1, 16384]"),
])
def test_bad_input_is_a_one_line_error(args, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(main, ["bench", "memory", *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
