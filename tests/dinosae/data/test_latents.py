"""The latent cache: encoding a folder, resuming, reading, and shape checks."""

from __future__ import annotations

import os

import pytest
import torch

import sphere_ops
from dinosae.config import AETrainConfig
from dinosae.data.latents import LatentCache, LatentCacheError, check_cache_fits, shard_name
from dinosae.io.protocol import ProtocolMismatchError
from dinosae.models.loading import load_model
from dinosae.pipelines.encode import encode_folder
from dinosae.train.autoencoder import train_autoencoder


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory, photos):
    from dinosae.config import AE_PRESETS, preset

    run = tmp_path_factory.mktemp("ae")
    config = AETrainConfig(steps=1, batch_size=4, lpips_weight=0.0, num_workers=0, image_every=10**6)
    train_autoencoder(run, photos["heldout"], preset(AE_PRESETS, "tiny"), config, device="cpu")
    return run


def test_cache_holds_the_encoder_latents_and_labels(tmp_path, photos, autoencoder_run):
    cache = encode_folder(autoencoder_run, photos["heldout"], tmp_path / "lat", flip=True, shard_size=10,
                          num_workers=0, progress=False)
    assert (len(cache), cache.tokens, cache.dim, cache.num_classes) == (32, 16, 192, 8)
    assert cache.meta["shard_counts"] == [10, 10, 10, 2]
    model = load_model(autoencoder_run, kind="autoencoder")
    from dinosae.data.images import ImageDataset

    dataset = ImageDataset(photos["heldout"], 64)
    for index in (0, 13, 31):
        image, label, _, _ = dataset[(index, False)]
        latent, cached_label = cache[(index, False)]
        flipped, _ = cache[(index, True)]
        with torch.no_grad():
            expected = model.encode(image[None])[0]
            expected_flip = model.encode(image.flip(-1)[None])[0]
        assert cached_label == label
        # bf16 storage: ~3 significant digits per coordinate, renormalized onto the spheres
        torch.testing.assert_close(latent, expected, atol=4e-3, rtol=0)
        torch.testing.assert_close(flipped, expected_flip, atol=4e-3, rtol=0)
        torch.testing.assert_close(latent.norm(dim=-1), torch.ones(16), atol=1e-6, rtol=0)


def test_encode_resumes_at_the_missing_shard(tmp_path, photos, autoencoder_run):
    out = tmp_path / "lat"
    encode_folder(autoencoder_run, photos["heldout"], out, shard_size=8, num_workers=0, progress=False)
    kept = out / shard_name(0)
    stamp = kept.stat().st_mtime_ns
    os.remove(out / shard_name(2))
    (out / "meta.json").unlink()
    with pytest.raises(LatentCacheError, match="not a finished latent cache"):
        LatentCache(out)
    cache = encode_folder(autoencoder_run, photos["heldout"], out, shard_size=8, num_workers=0, progress=False)
    assert kept.stat().st_mtime_ns == stamp and (out / shard_name(2)).is_file() and len(cache) == 32


def test_cache_shape_mismatch_is_a_clear_error(tmp_path):
    from dinosae.data.latents import write_meta, write_shard

    write_shard(tmp_path, 0, sphere_ops.random_uniform((4, 16), 8), torch.zeros(4, dtype=torch.long))
    write_meta(tmp_path, {"num": 4, "tokens": 16, "dim": 8, "shard_counts": [4], "num_shards": 1, "flip": False})
    with pytest.raises(LatentCacheError, match=r"holds \(16, 8\) latents, the model expects \(256, 768\)"):
        check_cache_fits(LatentCache(tmp_path), 256, 768)
    os.remove(tmp_path / shard_name(0))
    with pytest.raises(LatentCacheError, match="lacks"):
        LatentCache(tmp_path)


def test_a_rerun_with_other_settings_is_refused_and_leaves_the_cache_as_it_was(tmp_path, photos, autoencoder_run):
    out = tmp_path / "lat"
    encode_folder(autoencoder_run, photos["heldout"], out, shard_size=8, num_workers=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for changed, listed in (({"shard_size": 10}, "shard_size: 8 -> 10"), ({"flip": True}, "flip: False -> True")):
        with pytest.raises(ProtocolMismatchError, match=f"holds latents made with other settings \\({listed}\\)"):
            encode_folder(autoencoder_run, photos["heldout"], out, num_workers=0, progress=False,
                          **{"shard_size": 8, **changed})
    with pytest.raises(ProtocolMismatchError, match=r"other settings \(data: "):
        encode_folder(autoencoder_run, photos["train"], out, shard_size=8, num_workers=0, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_truncated_shard_is_refused_when_read_and_encoded_again_on_a_rerun(tmp_path, photos, autoencoder_run):
    out = tmp_path / "lat"
    cache = encode_folder(autoencoder_run, photos["heldout"], out, shard_size=8, num_workers=0, progress=False)
    expected = cache[(9, False)][0]
    cut = out / shard_name(1)
    cut.write_bytes(cut.read_bytes()[:-64])
    with pytest.raises(LatentCacheError, match="shard_00001.safetensors cannot be used \\(it is truncated\\)"):
        LatentCache(out)
    with pytest.warns(UserWarning, match="making shard_00001.safetensors again: it is truncated"):
        cache = encode_folder(autoencoder_run, photos["heldout"], out, shard_size=8, num_workers=0, progress=False)
    assert torch.equal(cache[(9, False)][0], expected)
