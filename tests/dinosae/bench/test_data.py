"""``dinosae bench data``: both loaders and both listings measured on the same folder, as JSON."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from dinosae.cli import main


def test_bench_data_reports_both_loaders_and_listings(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(6):
        path = tmp_path / f"class_{index % 2}" / f"{index}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["bench", "data", "--data", str(tmp_path), "--image-size", "32",
                                       "--batch-size", "2", "--workers", "0", "--batches", "1", "--repeats", "1",
                                       "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert set(report["loading"]["images_per_s"]) == {"dinosae", "torchvision"}
    assert report["listing"]["files"] == 6 and report["listing"]["bytes_per_record"]["dinosae"] > 0


def test_bench_data_refuses_a_flat_folder(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["bench", "data", "--data", str(tmp_path), "--workers", "0", "--no-listing"])
    assert result.exit_code != 0 and "flat folder" in result.output


def test_only_the_timed_loader_has_workers(tmp_path, monkeypatch):
    """A loader whose workers stayed alive would decode on the same cores while the other one is timed."""
    import multiprocessing

    from dinosae.bench import data

    rng = np.random.default_rng(1)
    for index in range(8):
        path = tmp_path / f"class_{index % 2}" / f"{index}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    workers_while_timed = []
    timed = data._seconds_for

    def counting(*args, **kwargs):
        workers_while_timed.append(len(multiprocessing.active_children()))
        return timed(*args, **kwargs)

    monkeypatch.setattr(data, "_seconds_for", counting)
    rates = data.loader_rates(tmp_path, image_size=16, batch_size=2, workers=1, batches=2, repeats=2)
    assert workers_while_timed == [1, 1, 1, 1]
    assert multiprocessing.active_children() == []
    assert all(rate > 0 for rate in rates.images_per_s.values()) and rates.settings["warmup"] == 3


def test_a_batch_larger_than_the_folder_is_one_line_not_an_endless_loop(tmp_path):
    for index in range(4):
        path = tmp_path / f"class_{index % 2}" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (20, 20)).save(path)
    result = CliRunner().invoke(main, ["bench", "data", "--data", str(tmp_path), "--image-size", "16",
                                       "--batch-size", "64", "--workers", "0"])
    assert result.exit_code != 0 and "a batch of 64 is more than the 4 images" in result.output
