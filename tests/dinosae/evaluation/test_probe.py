"""Linear probes of the latent against the teacher: features, splits, scikit-learn, a trained model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinosae.config import AE_PRESETS, AETrainConfig, preset
from dinosae.data.images import DataError
from dinosae.evaluation.probe import (probe_accuracy, probe_features, probe_summary, resolve_splits, split_features,
                                      stratified_split)
from dinosae.models.loading import load_model
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.vit import RandomTeacherWarning
from dinosae.train.autoencoder import train_autoencoder

SEED = 0


def _initial_model() -> SphericalAutoencoder:
    # Training seeds with config.seed right before building the model, so this is the run's exact start.
    torch.manual_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return SphericalAutoencoder(preset(AE_PRESETS, "tiny")).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photos) -> SphericalAutoencoder:
    """The tiny autoencoder after 30 stage-1 steps on the photos (cosine alignment, no LPIPS)."""
    run = tmp_path_factory.mktemp("probe_run")
    config = AETrainConfig(steps=30, batch_size=8, lr=3e-4, lpips_weight=0.0, num_workers=0, log_every=10,
                           image_every=10**6, seed=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        train_autoencoder(run, photos["train"], preset(AE_PRESETS, "tiny"), config, device="cpu")
    return load_model(run, kind="autoencoder")


@pytest.fixture(scope="module")
def trained_split(trained, photos):
    return split_features(trained, photos["train"], photos["heldout"], max_per_class=8)


def _read_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a class tree and its class index, read with PIL (the test data is already 64 px)."""
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.glob("*.png")):
            array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(array).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_features_are_the_mean_pooled_tokens_of_each_image(photos):
    model = _initial_model()
    features = probe_features(model, photos["heldout"], batch_size=5)  # batches of uneven size
    images, labels = _read_folder(photos["heldout"])
    with torch.no_grad():
        latent = model.encode(images)
        student = model.encoder.student_tokens(images)
        teacher = model.encoder.teacher_tokens(images)
    assert features.classes == sorted(p.name for p in photos["heldout"].iterdir())
    assert torch.equal(features.labels, labels)
    torch.testing.assert_close(features.latent, latent.mean(dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.teacher, teacher.mean(dim=1), atol=1e-5, rtol=1e-5)
    cosine = (student * teacher).sum(-1) / (student.norm(dim=-1) * teacher.norm(dim=-1))
    torch.testing.assert_close(features.cosine, cosine.mean(dim=1), atol=1e-5, rtol=1e-5)

    first_two = probe_features(model, photos["heldout"], max_per_class=2)
    kept = torch.cat([torch.nonzero(labels == c).flatten()[:2] for c in range(len(features.classes))])
    assert torch.equal(first_two.labels, labels[kept])
    torch.testing.assert_close(first_two.teacher, features.teacher[kept], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_stratified_split_holds_out_part_of_every_class(seed):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, 12, (int(torch.randint(2, 6, (1,), generator=generator)),), generator=generator)
    labels = torch.repeat_interleave(torch.arange(len(counts)), counts)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    fraction = float(torch.empty(1).uniform_(0.1, 0.6, generator=generator))
    train, test = stratified_split(labels, fraction, seed)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(labels)))
    for label, count in enumerate(counts.tolist()):
        held = int((labels[test] == label).sum())
        assert 1 <= held <= count - 1
        assert abs(held - fraction * count) <= 0.5 + 1e-9 or held in (1, count - 1)
    assert torch.equal(stratified_split(labels, fraction, seed)[1], test)


def test_resolve_splits_recognizes_split_roots_only(tmp_path):
    (tmp_path / "split" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "split" / "val" / "cat").mkdir(parents=True)
    assert resolve_splits(tmp_path / "split") == (tmp_path / "split" / "train", tmp_path / "split" / "val")
    # Classes that happen to be called train and test hold images, not class folders.
    for name in ("train", "test"):
        (tmp_path / "classes" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "classes" / name / "a.png")
    assert resolve_splits(tmp_path / "classes") == (tmp_path / "classes", None)


def test_probe_accuracy_on_a_held_out_fraction(photos):
    result = probe_accuracy(_initial_model(), photos["heldout"], 0.25, weight_decay=1e-2)
    assert (result["classes"], result["train_images"], result["test_images"]) == (8, 24, 8)
    assert result["probe_gap"] == pytest.approx(result["probe_teacher"] - result["probe_latent"])
    assert 0.0 <= result["probe_latent"] <= 1.0 and 0.0 <= result["probe_teacher"] <= 1.0


def _write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_unlabelled_or_mismatched_folders_are_refused(tmp_path, photos):
    model = _initial_model()
    _write_images(tmp_path / "flat", 3, 0)
    with pytest.raises(DataError, match="at least 2 class.*flat folder has no labels"):
        probe_features(model, tmp_path / "flat")
    _write_images(tmp_path / "one" / "cat", 3, 1)
    with pytest.raises(DataError, match="at least 2 class.*one class"):
        probe_features(model, tmp_path / "one")
    for name in ("cat", "dog"):
        _write_images(tmp_path / "other" / name, 2, 2)
    with pytest.raises(DataError, match="classes .* differ"):
        split_features(model, photos["heldout"], tmp_path / "other")


def test_teacher_probe_agrees_with_scikit_learn(trained_split):
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    train, held = trained_split
    weight_decay = 1e-2
    result = probe_summary(train, held, weight_decay)
    for kind in ("teacher", "latent"):
        train_x, test_x = getattr(train, kind).double().numpy(), getattr(held, kind).double().numpy()
        scaler = preprocessing.StandardScaler().fit(train_x)
        reference = linear_model.LogisticRegression(C=1 / (weight_decay * len(train_x)), max_iter=5000, tol=1e-10)
        reference.fit(scaler.transform(train_x), train.labels.numpy())
        expected = reference.score(scaler.transform(test_x), held.labels.numpy())
        # Two optimizers of the same convex objective: at most one borderline test image apart.
        assert abs(result[f"probe_{kind}"] - expected) <= 1 / len(held.labels) + 1e-9, kind


def test_trained_latent_probes_close_to_the_teacher(trained, trained_split, photos):
    train, held = trained_split
    result = probe_summary(train, held, 1e-3)
    assert result["probe_teacher"] >= 0.75
    assert abs(result["probe_gap"]) <= 0.125
    # Alignment moved the latent towards the teacher; the frozen teacher itself did not move.
    start_train, start_held = split_features(_initial_model(), photos["train"], photos["heldout"], max_per_class=8)
    assert result["teacher_cosine"] > 0.5 > float(start_held.cosine.mean()) + 0.3
    assert torch.equal(start_train.teacher, train.teacher) and torch.equal(start_held.teacher, held.teacher)
