"""The cosine-vs-MSE alignment ablation: same start and budget, numbers that re-measure, resumable output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinosae.data.images import DataError
from dinosae.experiments.ablate_align import COLUMNS, ablate_align, ablation_data, format_table
from dinosae.io.checkpoint import CheckpointError, load_checkpoint
from dinosae.models.loading import load_model
from dinosae.train.runlog import read_metrics

SETTINGS = dict(steps=3, batch_size=4, lpips_weight=0.0, progress=False)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, three_photos):
    out = tmp_path_factory.mktemp("ablate_align")
    return out, ablate_align(out, three_photos, **SETTINGS)


def _heldout_images(root) -> torch.Tensor:
    paths = sorted(p for folder in sorted((root / "heldout").iterdir()) for p in folder.glob("*.png"))
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_runs_differ_only_in_the_alignment_loss(ablation):
    out, result = ablation
    assert result["settings"]["steps"] == 3 and result["settings"]["stage"] == 1
    cosine, mse = read_metrics(out / "cosine"), read_metrics(out / "mse")
    assert [r["step"] for r in cosine] == [r["step"] for r in mse] == [1, 2, 3]
    # Same initialization and first batch: the first reconstruction loss is identical, the alignment loss is not.
    assert cosine[0]["l1"] == mse[0]["l1"]
    # The random teacher's final LayerNorm has unit gain and no bias, so every token has norm sqrt(D)
    # (up to its eps: sqrt(D var / (var + eps))) and the mean squared error is 2 (1 - cos): twice the
    # cosine loss at the same start.
    assert mse[0]["align"] == pytest.approx(2 * cosine[0]["align"], rel=1e-3)
    checkpoints = [load_checkpoint(out / name) for name in ("cosine", "mse")]
    assert [c.meta["train_config"]["align"] for c in checkpoints] == ["cosine", "mse"]
    stems = [{k: v for k, v in c.model.items() if k.startswith("encoder.stem.")} for c in checkpoints]
    assert any(not torch.equal(value, stems[1][key]) for key, value in stems[0].items())


def test_reported_numbers_re_measure(ablation, three_photos):
    out, result = ablation
    images = _heldout_images(three_photos)
    for name in ("cosine", "mse"):
        model = load_model(out / name, kind="autoencoder")
        with torch.no_grad():
            student = model.encoder.student_tokens(images)
            teacher = model.encoder.teacher_tokens(images)
            reconstruction = model.decode(student / student.norm(dim=-1, keepdim=True)).clamp(0, 1)
        mse = (reconstruction.double() - images.double()).square().flatten(1).mean(1)
        row = result[name]
        assert row["psnr"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), abs=1e-3)
        assert row["teacher_cosine"] == pytest.approx(float(F.cosine_similarity(student, teacher, dim=-1).mean()),
                                                      abs=1e-5)
        assert row["final_l1"] == read_metrics(out / name)[-1]["l1"]
        assert set(COLUMNS) <= set(row)
        assert 0.0 <= row["probe_latent"] <= 1.0 and 0.0 <= row["probe_teacher"] <= 1.0
    # One frozen teacher for both runs.
    assert result["cosine"]["probe_teacher"] == result["mse"]["probe_teacher"]


def test_writes_json_plot_and_table(ablation):
    out, result = ablation
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(result).splitlines()
    assert table[0].split()[0] == "align" and [line.split()[0] for line in table[1:]] == ["cosine", "mse"]


def test_existing_runs_need_resume_which_reproduces_the_result(ablation, three_photos):
    out, result = ablation
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        ablate_align(out, three_photos, **SETTINGS)
    again = ablate_align(out, three_photos, resume="latest", **SETTINGS)
    for name in ("cosine", "mse"):
        for column in COLUMNS:
            assert again[name][column] == pytest.approx(result[name][column], abs=1e-6), (name, column)


def test_data_without_held_out_images_is_refused(tmp_path, three_photos):
    with pytest.raises(DataError, match="no held-out split"):
        ablate_align(tmp_path / "out", three_photos / "train", **SETTINGS)
    assert not (tmp_path / "out").exists()


def test_without_data_the_photo_dataset_is_built_once(tmp_path):
    pytest.importorskip("skimage.data")
    train, heldout = ablation_data(tmp_path, None, None, 32)
    assert (train, heldout) == (tmp_path / "data" / "train", tmp_path / "data" / "heldout")
    assert len([p for p in train.iterdir() if p.is_dir()]) == 8
    first = sorted(train.rglob("*.png"))[0]
    stamp = first.stat().st_mtime_ns
    assert ablation_data(tmp_path, None, None, 32) == (train, heldout)
    assert first.stat().st_mtime_ns == stamp
