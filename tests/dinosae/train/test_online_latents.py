"""Training the DiT on images encoded as it trains gives the run that a latent cache of them gives."""

from __future__ import annotations

import pytest
import torch

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
