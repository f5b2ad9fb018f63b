"""One resolution of a run's config: preset < recipe < file < flags < resume, what was set on purpose, and
where every field came from."""

from __future__ import annotations

import dataclasses

import pytest

from dinosae.config import AEConfig, AETrainConfig, ConfigError, RunRequest, resolve_ae_run, resolve_dit_run, to_dict


def test_flags_win_over_the_file_which_wins_over_the_recipe():
    file = {"train": {"lr": 2e-5, "ema_decay": 0.99}, "model": {"image_size": 128}}
    run = resolve_ae_run(RunRequest("tiny", recipe="hae", stage=2, file=file, train={"lr": 3e-5, "steps": 100},
                                    model={"image_size": None}))
    assert run.train.lr == 3e-5 and run.train.ema_decay == 0.99 and run.model.image_size == 128
    assert run.train.betas == (0.5, 0.9) and run.train.noise_ramp_steps == 50  # the recipe, for 100 steps
    assert run.model.latent_scale == "raw_tokens"
    assert run.sources["train.lr"] == "command line" and run.sources["train.ema_decay"] == "config file"
    assert run.sources["model.image_size"] == "config file" and run.sources["train.betas"] == "recipe hae/ae-stage2.yaml"
    assert run.sources["model.vit"] == "preset tiny" and run.sources["train.seed"] == "default"


def test_only_what_was_given_counts_as_explicit():
    quiet = resolve_ae_run()
    assert quiet.explicit == {"model": frozenset(), "train": frozenset()}
    assert quiet.model.vit == "vit_base_patch16_dinov3" and quiet.train.stage == 1
    named = resolve_ae_run(RunRequest("tiny", recipe="hae", train={"seed": 3}))
    assert "vit" in named.explicit["model"] and {"seed", "batch_size", "lr"} <= named.explicit["train"]


def test_stage_rules_fill_what_no_layer_sets_and_derived_fields_follow_their_source():
    run = resolve_ae_run(RunRequest("tiny", stage=3, train={"lr": 3e-4, "gan_start": 7}))
    assert (run.train.lr, run.train.disc_lr, run.train.gan_start, run.train.disc_start) == (3e-4, 3e-4, 7, 7)
    assert run.train.train_stem is False and run.train.gan_weight == 0.5
    assert run.sources["train.train_stem"] == "recipe dino-sae/ae-stage3.yaml"
    assert run.sources["train.disc_lr"] == "= lr" and run.sources["train.disc_start"] == "= gan_start"
    # HAE's first stage leaves the stage rules to the defaults'.
    hae = resolve_ae_run(RunRequest(recipe="hae", stage=1))
    assert hae.train.train_stem is True and hae.sources["train.train_stem"] == "stage rule (dino-sae/ae-stage1.yaml)"


def test_an_init_model_replaces_the_preset_and_flags_still_apply():
    init = dataclasses.replace(resolve_ae_run(RunRequest("tiny")).model, latent_scale="raw_tokens", decode_scale=9.0)
    run = resolve_ae_run(RunRequest("B", model={"image_size": 128}), init=init)
    assert run.model.vit == init.vit and run.model.decode_scale == 9.0 and run.model.image_size == 128
    assert run.sources["model.decode_scale"] == "--init" and run.sources["model.image_size"] == "command line"


def test_python_configs_are_taken_whole_and_explicit_field_by_field():
    model, train = resolve_ae_run(RunRequest("tiny")).model, AETrainConfig(stage=2, steps=9)
    run = resolve_ae_run(RunRequest.of_configs(model, train))
    assert run.model == model and run.train == train
    assert run.explicit["train"] == frozenset(f.name for f in dataclasses.fields(AETrainConfig))
    narrow = resolve_ae_run(RunRequest.of_configs(model, train, explicit={"train": {"lr"}}))
    assert narrow.explicit == {"model": frozenset(), "train": frozenset({"lr"})}


def test_resume_is_the_last_layer():
    first = resolve_ae_run(RunRequest("tiny", train={"lr": 1e-5, "num_workers": 4, "steps": 10}))
    again = resolve_ae_run(RunRequest("tiny", train={"lr": 1e-4, "num_workers": 0, "steps": 20}))
    resumed = again.resumed(to_dict(first.model), to_dict(first.train), step=7)
    assert (resumed.train.lr, resumed.train.num_workers, resumed.train.steps) == (1e-4, 0, 20)
    assert resumed.changes == ("train.lr: 1e-05 -> 0.0001",)  # workers are the machine's, steps extend the run
    assert resumed.sources["train.lr"] == "command line" and resumed.sources["train.seed"] == "the run (step 7)"
    silent = resolve_ae_run().resumed(to_dict(first.model), to_dict(first.train), step=7)
    assert silent.model == first.model and silent.train == first.train and silent.changes == ()
    assert "changed on resume: train.lr: 1e-05 -> 0.0001" in resumed.describe()


def test_resolved_configs_are_frozen():
    run = resolve_ae_run(RunRequest("tiny"))
    for config, name in ((run.model, "image_size"), (run.model.decoder, "act"), (run.train, "lr")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, name, None)
    assert isinstance(run.model, AEConfig)


def test_the_dit_takes_the_cache_shape_and_lightning_flags():
    run = resolve_dit_run(RunRequest("tiny", lightning=True, model={"manifold": "euclidean", "prediction": "x1"}),
                          dim=32, grid_size=4, num_classes=7)
    assert (run.model.in_dim, run.model.grid_size, run.model.num_classes, run.model.rope) == (32, 4, 7, True)
    assert (run.model.manifold, run.model.prediction) == ("euclidean", "x1")
    assert {"rope", "norm", "manifold", "prediction"} <= run.explicit["model"]
    assert run.sources["model.rope"] == "--lightning" and run.sources["model.in_dim"] == "the latents"


def test_unknown_file_keys_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        resolve_ae_run(RunRequest("tiny", file={"train": {"lrr": 1.0}}))
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lrr: 1.0\n")
    with pytest.raises(ConfigError, match=r"--config run.yaml: unknown key 'lrr' in train \(did you mean 'lr'\?\)"):
        resolve_ae_run(RunRequest("tiny", file=path))


def test_describe_lists_every_field_once_with_its_source():
    run = resolve_ae_run(RunRequest("tiny", stage=2, train={"batch_size": 8}))
    lines = run.describe().splitlines()
    keys = [line.split()[0] for line in lines]
    assert len(keys) == len(set(keys)) and "model.decoder.widths" in keys and "train.batch_size" in keys
    assert any(line.startswith("train.batch_size") and line.endswith("command line") for line in lines)
