"""Training the DiT on images encoded as it trains gives the run that a latent cache of them gives."""

from __future__ import annotations

import pytest
import torch

import dinosae
from dinosae.config import DiTTrainConfig
from dinosae.io.checkpoint import load_checkpoint
from dinosae.pipelines.encode import encode_folder
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.runlog import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_online_encoding_trains_as_the_cache_of_the_same_images_and_flips(tmp_path, models, three_photos):
    images = three_photos / "train"
    cache = encode_folder(models / "ae", images, tmp_path / "latents", flip=True, shard_size=8, batch_size=5,
                          num_workers=0, progress=False)
    config = dit_config_for(cache, "tiny", hidden_size=32, depth=1, num_heads=2)
    train = DiTTrainConfig(steps=3, batch_size=6, lr=1e-3, num_workers=0, log_every=1, seed=3)
    train_dit(tmp_path / "cached", cache, config, train, device="cpu")
    train_dit(tmp_path / "online", None, config, train, device="cpu", ae=models / "ae", data=images)
    cached, online = load_checkpoint(tmp_path / "cached"), load_checkpoint(tmp_path / "online")
    assert online.meta["images"] == str(images) and online.meta["latents"] is None
    # The same latents up to the encoder's float32 rounding in batches of other sizes, which bf16 storage hides.
    for name, value in cached.model.items():
        torch.testing.assert_close(online.model[name], value, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close([r["loss"] for r in read_metrics(tmp_path / "online")],
                               [r["loss"] for r in read_metrics(tmp_path / "cached")], atol=1e-5, rtol=1e-5)


def test_the_dit_needs_one_source_of_latents(tmp_path, models, three_photos):
    with pytest.raises(ValueError, match="not both"):
        train_dit(tmp_path / "run", tmp_path / "latents", None, None, device="cpu", ae=models / "ae",
                  data=three_photos / "train")
    with pytest.raises(ValueError, match="needs a latent cache"):
        train_dit(tmp_path / "run", None, None, None, device="cpu", ae=models / "ae")


def _tiny_dit():
    """A DiT for the tiny autoencoder's 4 x 4 grid of 192-wide latents and one class."""
    return dinosae.create_model("dit-tiny", in_dim=192, grid_size=4, num_classes=1, hidden_size=32, depth=1,
                                num_heads=2).config


def _folder_with_corrupt_images(root, photos, readable: int, corrupt: int):
    folder = root / "cls"
    folder.mkdir(parents=True)
    for index, photo in enumerate(sorted((photos / "train").rglob("*.png"))[:readable]):
        (folder / f"good_{index}.png").write_bytes(photo.read_bytes())
    for index in range(corrupt):
        (folder / f"bad_{index}.jpg").write_bytes(b"\xff\xd8 not a jpeg " * (index + 1))
    return root


def test_online_batches_with_unreadable_images_train_on_the_rest(tmp_path, models, three_photos):
    """A micro-batch left without a readable image weighs nothing, instead of a NaN mean over no latents."""
    data = _folder_with_corrupt_images(tmp_path / "data", three_photos, readable=1, corrupt=7)
    config = DiTTrainConfig(steps=4, batch_size=4, grad_accum=2, lr=1e-3, num_workers=0, log_every=1, seed=0)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        train_dit(tmp_path / "run", None, _tiny_dit(), config, device="cpu", ae=models / "ae", data=data)
    losses = [record["loss"] for record in read_metrics(tmp_path / "run")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    skipped = load_checkpoint(tmp_path / "run").state["skipped"]
    assert sorted(path.rsplit("/", 1)[-1] for path in skipped) == [f"bad_{i}.jpg" for i in range(7)]


def test_online_training_on_a_folder_of_unreadable_images_stops_with_a_named_error(tmp_path, models, three_photos):
    from dinosae.data.listing import DataError

    data = _folder_with_corrupt_images(tmp_path / "data", three_photos, readable=0, corrupt=8)
    config = DiTTrainConfig(steps=4, batch_size=4, lr=1e-3, num_workers=0, log_every=1, seed=0)
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable image"):
        train_dit(tmp_path / "run", None, _tiny_dit(), config, device="cpu", ae=models / "ae", data=data)
