"""``dinosae eval gen``: the ImageNet protocol's metrics against an ADM-layout reference batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dinosae.cli import main
from dinosae.evaluation.generation import evaluate_samples
from dinosae.metrics import FeatureStats, frechet_distance


class Pooled(torch.nn.Module):
    """A cheap stand-in for the Inception network: channel means and a coarse spatial map."""

    has_logits = False

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], 1), images[:, :, ::4, ::4].flatten(1)


def _images(seed: int, n: int = 24, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _stats(images: np.ndarray, spatial: bool) -> tuple[np.ndarray, np.ndarray]:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    stats = FeatureStats()
    stats.update(Pooled().features(batch)[1 if spatial else 0])
    return stats.compute()


@pytest.fixture
def files(tmp_path):
    samples, reference = _images(0), _images(1)
    np.savez(tmp_path / "samples.npz", arr_0=samples, labels=np.zeros(24, dtype=np.int64))
    (tmp_path / "samples.json").write_text(json.dumps({"num": 24, "labels": "equal", "cfg": 1.5}))
    mu, sigma = _stats(reference, spatial=False)
    mu_s, sigma_s = _stats(reference, spatial=True)
    np.savez(tmp_path / "adm.npz", mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s, arr_0=reference)
    np.savez(tmp_path / "stats_only.npz", mu=mu, sigma=sigma)
    return tmp_path, samples, reference


def test_stored_reference_statistics_are_used_and_every_metric_reported(files):
    root, samples, reference = files
    result = evaluate_samples(root / "samples.npz", root / "adm.npz", extractor=Pooled())
    expected = frechet_distance(*_stats(reference, False), *_stats(samples, False))
    expected_s = frechet_distance(*_stats(reference, True), *_stats(samples, True))
    assert result["fid"] == pytest.approx(expected, rel=1e-9) and result["sfid"] == pytest.approx(expected_s, rel=1e-9)
    assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert (result["num_samples"], result["num_reference_images"]) == (24, 24)
    assert result["protocol"] == {"num": 24, "labels": "equal", "cfg": 1.5}
    assert result["inception_score"] is None and "classifier head" in result["unavailable"]["inception_score"]


def test_a_statistics_only_reference_gives_fid_and_says_what_is_missing(files):
    root, samples, reference = files
    result = evaluate_samples(root / "samples.npz", root / "stats_only.npz", extractor=Pooled())
    assert result["fid"] == pytest.approx(frechet_distance(*_stats(reference, False), *_stats(samples, False)))
    assert result["sfid"] is None and result["precision"] is None
    assert set(result["unavailable"]) == {"sfid", "precision_recall", "inception_score"}


def test_bad_inputs_are_one_clear_error(files, tmp_path):
    root, _, _ = files
    np.savez(tmp_path / "labels_only.npz", labels=np.zeros(3))
    np.savez(tmp_path / "big.npz", arr_0=_images(2, n=4, size=32))
    with np.load(root / "stats_only.npz") as stats:
        np.savez(tmp_path / "nan_mu.npz", mu=np.where(np.arange(stats["mu"].size) == 1, np.nan, stats["mu"]),
                 sigma=stats["sigma"])
    (tmp_path / "text.npz").write_text("mu sigma")
    cases = [
        (dict(reference=tmp_path / "nan_mu.npz"), "the reference's mu contains NaN"),
        (dict(reference=tmp_path / "text.npz"), "is not an .npz archive"),
        (dict(reference=tmp_path / "labels_only.npz"), "holds neither mu/sigma nor images"),
        (dict(reference=tmp_path / "big.npz"), "samples are 16x16 px, the reference images 32x32"),
        (dict(num_samples=50_000), "holds 24 samples, fewer than the 50000 asked for"),
        (dict(reference=tmp_path / "missing.npz"), "must be an existing .npz"),
    ]
    for overrides, message in cases:
        kwargs = {"samples": root / "samples.npz", "reference": root / "adm.npz", "extractor": Pooled(), **overrides}
        with pytest.raises(ValueError, match=message):
            evaluate_samples(**kwargs)


def test_the_command_runs_the_inception_network_and_prints_json(tmp_path):
    np.savez(tmp_path / "samples.npz", arr_0=_images(0, n=6), labels=np.zeros(6, dtype=np.int64))
    (tmp_path / "samples.json").write_text(json.dumps({"num": 6, "cfg": 1.5}))
    np.savez(tmp_path / "images.npz", arr_0=_images(1, n=6))
    result = CliRunner().invoke(main, ["eval", "gen", "--samples", str(tmp_path / "samples.npz"), "--ref",
                                       str(tmp_path / "images.npz"), "--out", str(tmp_path / "eval"), "--device",
                                       "cpu", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["fid"] > 0 and printed["sfid"] > 0 and printed["num_samples"] == 6
    assert printed["protocol"]["cfg"] == 1.5
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["fid"] == printed["fid"]
