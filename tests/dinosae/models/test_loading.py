"""The one loader: each format read into one record, built once by the model's class, with the teacher policy
decided in one place; and the load goes down the house without calling back up."""

from __future__ import annotations

import sys
import tomllib
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dinosae
from dinosae.config import to_dict
from dinosae.io.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from dinosae.models import SphericalAutoencoder
from dinosae.models.loading import build_model, load_model, read_model, read_run
from dinosae.models.record import Teacher
from dinosae.models.vit import RandomTeacherWarning

ROOT = Path(__file__).resolve().parents[3]


def _ae(**overrides) -> SphericalAutoencoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return dinosae.create_model("ae-tiny", vit_depth=2, **overrides).eval()


def _run(tmp_path: Path, model: torch.nn.Module, meta: dict, ema: dict | None = None, name: str = "run") -> Path:
    save_checkpoint(tmp_path / name, Checkpoint(step=3, model=dict(model.state_dict()), ema=ema, meta=meta))
    return tmp_path / name


def _teacher_file(tmp_path: Path, ae: SphericalAutoencoder) -> Path:
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() + 0.01 for k, v in ae.encoder.vit.state_dict().items()}, path)
    return path


def test_a_run_is_read_with_its_ema_and_its_discriminators_heads_apart(tmp_path):
    dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3, hidden_size=32, depth=1, num_heads=2)
    weights = {**dit.state_dict(), "discriminator.head.weight": torch.ones(2)}
    ema = {"x_embedder.weight": torch.full_like(dit.x_embedder.weight, 0.5)}
    save_checkpoint(tmp_path / "run", Checkpoint(step=3, model=weights, ema=ema,
                                                 meta={"kind": "dit", "dit_config": to_dict(dit.config)}))
    record = read_model(tmp_path / "run")
    assert record.kind == "dit" and not record.released and record.path.name == "step_00000003"
    assert torch.equal(record.weights["x_embedder.weight"], ema["x_embedder.weight"])
    assert "discriminator.head.weight" not in record.weights and set(record.parts) == {"discriminator"}
    raw = read_model(tmp_path / "run", use_ema=False)
    assert torch.equal(raw.weights["x_embedder.weight"], dit.x_embedder.weight)
    assert torch.equal(build_model(raw).x_embedder.weight, dit.x_embedder.weight)


def test_every_format_lands_in_the_same_record(tmp_path):
    ae = _ae()
    run = _run(tmp_path, ae, {"kind": "autoencoder", "ae_config": to_dict(ae.config)})
    folder = ae.save_pretrained(tmp_path / "folder")
    from_run, from_folder = read_model(run), read_model(folder)
    assert from_run.config == from_folder.config == ae.config
    assert from_run.weights.keys() == from_folder.weights.keys()
    assert from_run.teacher == Teacher() and from_folder.teacher == Teacher() and from_folder.released
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        with torch.no_grad():
            assert torch.equal(load_model(run)(images), load_model(folder)(images))


def test_the_kind_is_refused_before_the_config_is_read(tmp_path):
    save_checkpoint(tmp_path / "dit", Checkpoint(step=1, model={"w": torch.ones(2)}, meta={"kind": "dit"}))
    with pytest.raises(CheckpointError, match="holds a DiT, not an autoencoder"):
        read_model(tmp_path / "dit", kind="autoencoder")
    with pytest.raises(CheckpointError, match="its meta.json has no dit_config"):
        read_run(tmp_path / "dit")
    with pytest.raises(ValueError, match="kind must be one of"):
        read_model(tmp_path / "dit", kind="vae")


def test_the_teacher_policy(tmp_path):
    ae = _ae()
    teacher = _teacher_file(tmp_path, ae)
    with_file = SphericalAutoencoder(ae.config, teacher).eval()
    meta = {"kind": "autoencoder", "ae_config": to_dict(ae.config), "teacher_weights": str(teacher)}
    # The weights lack the ViT: the recorded file rebuilds it, and a file that moved must be given.
    run = tmp_path / "with_file"
    save_checkpoint(run, Checkpoint(step=1, model=with_file.weights_to_save(), meta=meta))
    loaded = load_model(run)
    assert torch.equal(loaded.encoder.vit.blocks[0].attn.qkv.weight, with_file.encoder.vit.blocks[0].attn.qkv.weight)
    assert loaded.teacher_origin == str(teacher)
    moved = teacher.rename(tmp_path / "moved.safetensors")
    with pytest.raises(CheckpointError, match="that .* needs are missing; pass --teacher-weights FILE"):
        load_model(run)
    assert load_model(run, teacher_weights=moved).teacher_weights == str(moved)
    # A random ViT is the one its decoder was trained on: a teacher file would replace it, and is refused.
    random_run = _run(tmp_path, ae, {"kind": "autoencoder", "ae_config": to_dict(ae.config)}, name="random")
    with pytest.raises(CheckpointError, match="trained with a random ViT"):
        load_model(random_run, teacher_weights=moved)
    with pytest.warns(RandomTeacherWarning, match="has a random ViT teacher"):
        load_model(random_run)
    # A ViT without its patch embedding (an official release's): the teacher stays refused until a file gives one.
    missing = "the official file carries no patch embedding for it; pass --teacher-weights FILE"
    record = replace(read_model(random_run), teacher=Teacher(origin="release.pth", missing=missing))
    refused = build_model(record)
    with pytest.raises(ValueError, match="needs the DINOv3 teacher, but the official file"):
        refused.encoder.teacher_tokens(torch.rand(1, 3, 64, 64))
    fixed = build_model(record, teacher_weights=moved)
    assert fixed.encoder.teacher_missing is None and fixed.teacher_origin == "release.pth"
    assert torch.equal(fixed.encoder.vit.patch_embed.proj.weight,
                       SphericalAutoencoder(ae.config, moved).encoder.vit.patch_embed.proj.weight)
    assert torch.equal(fixed.encoder.vit.blocks[0].attn.qkv.weight, ae.encoder.vit.blocks[0].attn.qkv.weight)


def _layer_ranks() -> dict[str, int]:
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    return {name.strip(): len(layers) - i for i, line in enumerate(layers) for name in line.split("|")}


def test_a_checkpoints_load_never_calls_back_up_the_layers(tmp_path):
    """``dinosae encode --ckpt RUN``'s load: every call goes to the same package or one below (a callback from a
    lower layer into a model, as a weight loader asking the model what it saves, would show here)."""
    ae = _ae()
    run = _run(tmp_path, ae, {"kind": "autoencoder", "ae_config": to_dict(ae.config)})
    ranks = _layer_ranks()

    def rank(module: str) -> int | None:
        return ranks.get(".".join(module.split(".")[:2]))

    climbs = []

    def profile(frame, event, arg):
        if event != "call" or frame.f_back is None:
            return
        callee, caller = frame.f_globals.get("__name__", ""), frame.f_back.f_globals.get("__name__", "")
        if rank(callee) is not None and rank(caller) is not None and rank(callee) > rank(caller):
            climbs.append(f"{caller} -> {callee}.{frame.f_code.co_name}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        sys.setprofile(profile)
        try:
            load_model(run, kind="autoencoder")
        finally:
            sys.setprofile(None)
    assert climbs == []


def _edit_config(folder: Path, **fields) -> None:
    import json

    saved = json.loads((folder / "config.json").read_text())
    for path, value in fields.items():
        node = saved["config"]
        *parents, leaf = path.split("__")
        for name in parents:
            node = node[name]
        node[leaf] = value
    (folder / "config.json").write_text(json.dumps(saved))


@pytest.mark.parametrize("kind, fields, message", [
    ("dit", dict(hidden_size=1 << 20), r"hidden_size: must lie in \[1, 65536\]"),
    ("dit", dict(grid_size=100_000), r"grid_size: must lie in \[1, 1024\]"),
    ("dit", dict(hidden_size=64, num_heads=4), r"does not fit its config: .* in the file, .* in the model"),
    ("ae", dict(decoder__widths=[16, 32, 64, 128, 1 << 20]), r"widths: must lie in \[1, 65536\]"),
    ("ae", dict(decoder__head_dim=0), r"head_dim: must lie in \[1, 65536\]"),
    ("ae", dict(decoder__widths=[16, 32, -64, 128, 128]), "widths: must lie in"),
    ("ae", dict(vit_depth=-1), r"vit_depth: must lie in \[1, 256\]"),
    ("ae", dict(vit_depth=0), r"vit_depth: must lie in \[1, 256\]"),
    ("ae", dict(vit="vit_giant_unknown"), "is not a timm model"),
    ("ae", dict(decoder__widths=[16, 32, 64, 128, 256]), "does not fit its config"),
])
def test_a_folder_config_is_checked_against_its_weights_before_anything_is_allocated(tmp_path, kind, fields, message):
    model = _ae() if kind == "ae" else dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3,
                                                             hidden_size=32, depth=1, num_heads=2)
    folder = model.save_pretrained(tmp_path / "folder")
    _edit_config(folder, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        with pytest.raises((CheckpointError, ValueError), match=message) as error:
            load_model(folder)
    assert "\n" not in str(error.value)


def test_commands_compute_in_float32_whatever_dtypes_a_folder_holds(tmp_path):
    dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3, hidden_size=32, depth=1, num_heads=2)
    for name, model in (("f64", dit.double()), ("mixed", dit.float().to(torch.float32))):
        if name == "mixed":
            model.final_layer.to(torch.bfloat16)
        folder = model.save_pretrained(tmp_path / name)
        loaded = load_model(folder)
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        from dinosae.pipelines.sample import generate_latents

        latents = generate_latents(loaded, torch.tensor([0, 1]), steps=2)
        assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
