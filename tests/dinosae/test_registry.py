"""One registry: every model by name, built from torch-free configs and loaded back by kind."""

from __future__ import annotations

import warnings

import pytest
import torch

import dinosae
from dinosae.config import AE_PRESETS, DIT_PRESETS, to_dict
from dinosae.io.checkpoint import Checkpoint, save_checkpoint
from dinosae.models import DiT, SphericalAutoencoder


def test_list_models_names_every_preset_of_each_kind():
    assert dinosae.list_models() == [f"ae-{n}" for n in AE_PRESETS] + [f"dit-{n}" for n in DIT_PRESETS]
    assert dinosae.list_models("dit") == ["dit-tiny", "dit-S", "dit-B", "dit-L", "dit-XL"]


def test_create_model_builds_each_kind_with_overrides():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = dinosae.create_model("ae-tiny", image_size=32, decoder={"depths": (0, 1, 1, 1, 1)})
    assert isinstance(ae, SphericalAutoencoder) and ae.config.image_size == 32
    assert ae.decode(ae.encode(torch.rand(1, 3, 32, 32))).shape == (1, 3, 32, 32)
    dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
    assert isinstance(dit, DiT) and dit.config.hidden_size == DIT_PRESETS["tiny"].hidden_size
    assert AE_PRESETS["tiny"].image_size == 64  # overrides never leak into the registry


@pytest.mark.parametrize("name, overrides, message", [
    ("ae-XXL", {}, "unknown model 'ae-XXL'"),
    ("vae-tiny", {}, "unknown model"),
    ("dit-tiny", {"hidden": 3}, "unknown DiTConfig fields \\['hidden'\\]"),
    ("dit-tiny", {"teacher_weights": "x.pth"}, "teacher_weights is for autoencoders"),
])
def test_create_model_refuses_what_it_cannot_build(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        dinosae.create_model(name, **overrides)


def test_load_model_dispatches_on_the_checkpoint_kind(tmp_path):
    dit = dinosae.create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_()
    save_checkpoint(tmp_path / "dit", Checkpoint(step=1, model=dit.state_dict(),
                                                 meta={"kind": "dit", "dit_config": to_dict(dit.config)}))
    loaded = dinosae.load_model(tmp_path / "dit")
    assert isinstance(loaded, DiT) and not loaded.training
    x = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    t, y = torch.rand(2), torch.tensor([0, 3])
    torch.testing.assert_close(loaded(x, t, y), dit.eval()(x, t, y), rtol=0, atol=0)
