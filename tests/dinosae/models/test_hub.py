"""Hub-style model folders: bit-exact round trips, the Hub path (without the network), runs exported with a
model card, and bad input refused in one line without leaving a folder that loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dinosae
import dinosae.models.hub as hub_module
from dinosae.io.checkpoint import CheckpointError
from dinosae.io.tensor_files import read_safetensors
from dinosae.models import DiT, SphericalAutoencoder
from dinosae.models.folder import PretrainedError, is_model_folder
from dinosae.models.loading import load_model, read_model
from dinosae.models.vit import RandomTeacherWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def _quiet_ae(**overrides) -> SphericalAutoencoder:
    """ae-tiny (64 px) with a random teacher and two ViT blocks: the whole format, at a fraction of the cost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return dinosae.create_model("ae-tiny", vit_depth=2, **overrides).eval()


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight moved off its initial value (adaLN-Zero would make a DiT's output 0, and equal by luck)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator).to(tensor.dtype))
    return model.eval()


def _small_dit() -> DiT:
    return _perturbed(dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3, hidden_size=32, depth=2,
                                           num_heads=2))


def _dit_inputs(dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(3, 4, 8, generator=generator), dim=-1).to(dtype)
    return x, torch.rand(3, generator=generator).to(dtype), torch.tensor([0, 2, 3])


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for key, value in left.items():
        assert right[key].dtype == value.dtype and torch.equal(right[key], value), key


def test_an_autoencoder_round_trips_bit_for_bit(tmp_path):
    ae = _quiet_ae()
    folder = ae.save_pretrained(tmp_path / "ae")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "**The teacher was random.**" in (folder / "README.md").read_text()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["kind"] == "autoencoder" and saved["format"] == "dinosae-pretrained" and saved["format_version"] == 1
    assert saved["vit_included"] and saved["teacher_random"] and saved["teacher_weights"] is None
    assert saved["config"] == dinosae.config.to_dict(ae.config)
    with pytest.warns(RandomTeacherWarning, match="random ViT teacher"):
        loaded = SphericalAutoencoder.from_pretrained(folder)
    _same_state(ae, loaded)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(images), ae(images))
        assert torch.equal(loaded.encode(images), ae.encode(images))
        assert torch.equal(loaded.encoder.teacher_tokens(images), ae.encoder.teacher_tokens(images))
    assert loaded.teacher_origin is None and not loaded.training


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_dit_round_trips_bit_for_bit_in_its_dtype(tmp_path, dtype):
    dit = _small_dit().to(dtype)
    folder = dit.save_pretrained(tmp_path / "dit", record={"classes": ["a", "b", "c"]})
    loaded = DiT.from_pretrained(folder)
    _same_state(dit, loaded)
    assert loaded.config == dit.config and read_model(folder).meta["classes"] == ["a", "b", "c"]
    with torch.no_grad():
        out, again = dit(*_dit_inputs(dtype)), loaded(*_dit_inputs(dtype))
    assert out.abs().max() > 0 and torch.equal(out, again)
    for load in (load_model, lambda path: load_model(path, kind="dit")):  # what every command calls: float32
        model = load(folder)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        with torch.no_grad():
            assert torch.equal(load_model(folder, dtype=None)(*_dit_inputs(dtype)), out)
            assert torch.equal(model(*_dit_inputs(torch.float32)), dit.float()(*_dit_inputs(torch.float32)))


def test_mixed_dtypes_are_kept_tensor_by_tensor(tmp_path):
    dit = _small_dit()
    dit.final_layer.to(torch.float64)
    loaded = load_model(dit.save_pretrained(tmp_path / "dit"), dtype=None)
    _same_state(dit, loaded)


def _teacher_file(tmp_path: Path, ae: SphericalAutoencoder) -> Path:
    path = tmp_path / "dinov3.safetensors"
    save_file({k: v.contiguous() for k, v in ae.encoder.vit.state_dict().items()}, path)
    return path


def test_a_folder_without_the_vit_loads_with_its_teacher_file(tmp_path):
    teacher = _teacher_file(tmp_path, _perturbed(_quiet_ae(), seed=3))
    ae = SphericalAutoencoder(_quiet_ae().config, teacher).eval()
    folder = ae.save_pretrained(tmp_path / "ae", include_vit=False)
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["vit_included"], saved["teacher_weights"], saved["teacher_random"]) == (False, str(teacher), False)
    assert not any(k.startswith("encoder.vit.") for k in read_safetensors(folder / "model.safetensors"))
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomTeacherWarning)  # a real teacher: no warning
        loaded = load_model(folder, kind="autoencoder")
    with torch.no_grad():
        assert torch.equal(loaded(images), ae(images))
    moved = teacher.rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="are missing; pass --teacher-weights FILE"):
        load_model(folder)
    with torch.no_grad():
        assert torch.equal(load_model(folder, teacher_weights=moved)(images), ae(images))
    with pytest.raises(ValueError, match="include_vit=False needs a ViT read from a teacher-weights file"):
        _quiet_ae().save_pretrained(tmp_path / "random", include_vit=False)


def test_a_teacher_without_patch_embedding_stays_refused_until_one_is_given(tmp_path):
    # What an official release file loads as: its ViT, a stand-in patch embedding, and the teacher refused.
    ae = _perturbed(_quiet_ae(), seed=5)
    ae.teacher_origin, ae.encoder.teacher_missing = "release.pth", "the official file carries no patch embedding"
    folder = ae.save_pretrained(tmp_path / "ae")
    assert json.loads((folder / "config.json").read_text())["teacher_random"] is False
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loaded = load_model(folder)
    with pytest.raises(ValueError, match="carries no patch embedding"):
        loaded.encoder.teacher_tokens(images)
    teacher = _teacher_file(tmp_path, _perturbed(_quiet_ae(), seed=6))
    fixed = load_model(folder, teacher_weights=teacher)
    assert fixed.encoder.teacher_tokens(images).shape == (1, 16, 192)
    assert torch.equal(fixed.encoder.vit.patch_embed.proj.weight,
                       read_safetensors(teacher)["patch_embed.proj.weight"])
    assert torch.equal(fixed.encoder.vit.blocks[0].attn.qkv.weight, ae.encoder.vit.blocks[0].attn.qkv.weight)


def _fake_hub(monkeypatch, folder: Path, calls: list) -> None:
    """The Hub, offline: ``hf_hub_download`` (the mixin's and the library's) serves the files of ``folder``."""

    def hf_hub_download(repo_id, filename, **options):
        calls.append((repo_id, filename, options))
        return str(folder / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", hf_hub_download)


def test_a_repo_id_is_downloaded_through_the_hub_mixin(tmp_path, monkeypatch):
    folder = _small_dit().save_pretrained(tmp_path / "cache" / "snapshot")
    calls = []
    _fake_hub(monkeypatch, folder, calls)
    monkeypatch.chdir(tmp_path)  # so that "someone/dit-tiny" is surely not a local path
    loaded = DiT.from_pretrained("someone/dit-tiny", revision="v1")
    with torch.no_grad():
        assert torch.equal(loaded(*_dit_inputs()), load_model(folder)(*_dit_inputs()))
        assert torch.equal(load_model("someone/dit-tiny", revision="v1")(*_dit_inputs()), loaded(*_dit_inputs()))
    assert {repo for repo, _, _ in calls} == {"someone/dit-tiny"}
    assert {name for _, name, _ in calls} == {"config.json", "model.safetensors"}
    assert all(options["revision"] == "v1" for _, _, options in calls)


def test_a_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    def offline(repo_id, filename, **options):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load this file")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", offline)
    monkeypatch.chdir(tmp_path)
    for load in (lambda: load_model("someone/missing"), lambda: DiT.from_pretrained("someone/missing")):
        with pytest.raises(PretrainedError) as error:
            load()
        assert ("'someone/missing' is not a local folder, and downloading it from the Hugging Face Hub failed"
                in str(error.value))
        assert "\n" not in str(error.value)


def test_bad_folders_are_refused_with_their_reason(tmp_path):
    ae_folder = _quiet_ae().save_pretrained(tmp_path / "ae")
    dit_folder = _small_dit().save_pretrained(tmp_path / "dit")
    (tmp_path / "empty").mkdir()
    (tmp_path / "diffusers").mkdir()
    (tmp_path / "diffusers" / "config.json").write_text('{"_class_name": "AutoencoderDC"}')
    (tmp_path / "diffusers" / "model.safetensors").write_bytes(b"")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((dit_folder / "config.json").read_text())
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "model.safetensors").write_bytes((dit_folder / "model.safetensors").read_bytes())
    (newer / "config.json").write_text(json.dumps({**json.loads((dit_folder / "config.json").read_text()),
                                                   "format_version": 99}))
    cases = [
        (lambda: load_model(tmp_path / "missing"), "does not exist"),
        (lambda: DiT.from_pretrained(tmp_path / "missing"), "does not exist"),
        (lambda: DiT.from_pretrained(tmp_path / "empty"), "has no config.json"),
        (lambda: DiT.from_pretrained(tmp_path / "diffusers"), "is not a dinosae model's"),
        (lambda: load_model(no_weights, kind="dit"), "has no model.safetensors"),
        (lambda: load_model(newer), "format version 99"),
        (lambda: DiT.from_pretrained(ae_folder), "holds an autoencoder, not a DiT"),
        (lambda: SphericalAutoencoder.from_pretrained(dit_folder), "holds a DiT, not an autoencoder"),
        (lambda: load_model(dit_folder, kind="autoencoder"), "holds a DiT, not an autoencoder"),
        (lambda: load_model(dit_folder, teacher_weights="dinov3.pth"), "--teacher-weights is for autoencoders"),
        (lambda: _small_dit().save_pretrained(ae_folder), "is not empty"),
    ]
    for call, reason in cases:
        with pytest.raises((PretrainedError, ValueError, FileExistsError)) as error:
            call()
        assert reason in str(error.value) and "\n" not in str(error.value), (reason, str(error.value))
    assert not is_model_folder(tmp_path / "diffusers") and is_model_folder(dit_folder)


def test_a_failed_write_leaves_no_folder_that_loads(tmp_path, monkeypatch):
    dit = _small_dit()
    previous = dit.save_pretrained(tmp_path / "kept")

    def disk_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub_module, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        dit.save_pretrained(tmp_path / "new")
    with pytest.raises(OSError, match="No space left on device"):
        _small_dit().save_pretrained(previous, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no half folder, no staging leftovers
    with torch.no_grad():
        assert torch.equal(load_model(previous)(*_dit_inputs()), dit(*_dit_inputs()))


@pytest.mark.parametrize("include_vit", [True, False], ids=["vit in the folder", "vit from its teacher file"])
def test_an_exported_folder_starts_a_stage_with_its_own_config(include_vit, tmp_path, three_photos):
    """``train ae --init FOLDER``: the folder's configuration wins over the preset, its weights are the start,
    and the run records where its ViT comes from so that its checkpoints reload."""
    from dinosae.config import AETrainConfig, model_config
    from dinosae.io.checkpoint import load_checkpoint
    from dinosae.train.autoencoder import train_autoencoder

    teacher = None if include_vit else _teacher_file(tmp_path, _perturbed(_quiet_ae(), seed=8))
    ae = _perturbed(SphericalAutoencoder(_quiet_ae().config, teacher), seed=7)
    if not include_vit:
        ae.encoder.vit.load_state_dict(read_safetensors(teacher))
    folder = ae.save_pretrained(tmp_path / "ae", include_vit=include_vit)
    _, preset = model_config("ae-B")
    fast = dict(steps=1, batch_size=2, lpips_weight=0.0, gan_weight=0.0, num_workers=0, log_every=1,
                image_every=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        train_autoencoder(tmp_path / "s3", three_photos / "heldout", preset, AETrainConfig(stage=3, **fast),
                          init=folder, device="cpu")
        tuned = load_model(tmp_path / "s3", kind="autoencoder")
    meta = load_checkpoint(tmp_path / "s3").meta
    assert meta["ae_config"] == dinosae.config.to_dict(ae.config) and meta["init"] == str(folder)
    assert meta["teacher_weights"] == (None if include_vit else str(teacher))
    _same_state(tuned.encoder, ae.encoder)  # stage 3 trains the decoder alone
    assert not all(torch.equal(a, b) for a, b in zip(tuned.decoder.parameters(), ae.decoder.parameters()))
