"""The command line end to end: train, reconstruct, encode, train dit, sample, eval; one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from dinosae.cli import main


def _run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def _ok(*args: str) -> str:
    result = _run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def _fails_with(reason: str, *args: str) -> None:
    result = _run(*args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and reason in lines[0], result.output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, photos):
    """An autoencoder run, a latent cache and a DiT run, made through the commands themselves."""
    root = tmp_path_factory.mktemp("cli")
    common = ["--preset", "tiny", "--batch-size", "4", "--num-workers", "0", "--device", "cpu"]
    _ok("train", "ae", "--data", photos["heldout"], "--out", root / "s1", "--steps", "2", *common,
        "--config", _lpips_off(root))
    _ok("train", "ae", "--data", photos["heldout"], "--out", root / "s2", "--stage", "2", "--init", root / "s1",
        "--steps", "1", *common)
    _ok("encode", "--ckpt", root / "s2", "--data", photos["heldout"], "--out", root / "latents", "--num-workers", "0")
    _ok("train", "dit", "--latents", root / "latents", "--out", root / "dit", "--preset", "tiny", "--steps", "2",
        "--batch-size", "8", "--num-workers", "0", "--lightning", "--device", "cpu")
    return root


def _lpips_off(root):
    path = root / "fast.yaml"  # LPIPS's VGG16 is most of a CPU step
    path.write_text("train:\n  lpips_weight: 0.0\n  image_every: 1000\n")
    return path


def test_reconstruct_writes_images_and_prints_json(pipeline, photos, tmp_path):
    output = _ok("reconstruct", "--ckpt", pipeline / "s2", "--data", photos["heldout"], "--out", tmp_path / "rec",
                 "--limit", "8", "--json")
    metrics = json.loads(output.strip().splitlines()[-1])
    assert set(metrics) >= {"psnr", "ssim", "lpips"} and metrics["images"] == 8
    assert (tmp_path / "rec" / "grid.png").is_file() and len(list((tmp_path / "rec" / "reconstructions").iterdir())) == 8
    assert json.loads((tmp_path / "rec" / "metrics.json").read_text())["images"] == 8


def test_sample_writes_pngs_grid_and_npz(pipeline, tmp_path):
    _ok("sample", "--ae", pipeline / "s2", "--dit", pipeline / "dit", "--out", tmp_path / "s", "--num", "5",
        "--steps", "3", "--cfg", "1.5", "--method", "heun", "--classes", "0,2", "--guidance-interval", "0.1,0.9")
    import numpy as np

    with np.load(tmp_path / "s" / "samples.npz") as stored:
        assert stored["arr_0"].shape == (5, 64, 64, 3) and stored["labels"].tolist() == [0, 2, 0, 2, 0]
    assert (tmp_path / "s" / "grid.png").is_file()


def test_exported_folders_load_and_sample_as_their_runs(pipeline, tmp_path):
    import numpy as np

    from dinosae.models.loading import load_model

    _ok("export", pipeline / "s2", tmp_path / "ae")
    _ok("export", pipeline / "dit", tmp_path / "dit")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "ae")(images), load_model(pipeline / "s2")(images))
    card = (tmp_path / "ae" / "README.md").read_text()
    assert "**The teacher was random.**" in card and "- random-teacher" in card
    assert "| stage 1 | 2 | 4 |" in card and "| stage 2 | 1 | 4 |" in card  # the stage history, through --init
    assert "Training, the last logged step (1):" in card and "- Images: 32 files" in card
    for name, ae, dit in (("runs", pipeline / "s2", pipeline / "dit"), ("folders", tmp_path / "ae", tmp_path / "dit")):
        _ok("sample", "--ae", ae, "--dit", dit, "--out", tmp_path / name, "--num", "2", "--steps", "2", "--no-png")
    with np.load(tmp_path / "runs" / "samples.npz") as runs, np.load(tmp_path / "folders" / "samples.npz") as folders:
        assert np.array_equal(runs["arr_0"], folders["arr_0"]) and np.array_equal(runs["labels"], folders["labels"])


def test_eval_recon_json_matches_the_library(pipeline, photos):
    from dinosae.evaluation.reconstruction import reconstruct_folder

    output = _ok("eval", "recon", "--ckpt", pipeline / "s2", "--data", photos["heldout"], "--limit", "4", "--json")
    printed = json.loads(output.strip().splitlines()[-1])
    library = reconstruct_folder(pipeline / "s2", photos["heldout"], None, device="cpu", limit=4)
    assert printed["images"] == 4
    for key in ("psnr", "ssim", "lpips"):
        assert printed[key] == pytest.approx(library[key], rel=1e-6), key


def test_dit_resume_extends_a_run(pipeline, tmp_path):
    from dinosae.io.checkpoint import load_checkpoint
    from dinosae.train.runlog import read_metrics

    run = tmp_path / "dit"
    shutil.copytree(pipeline / "dit", run)
    before = load_checkpoint(run)
    _ok("train", "dit", "--latents", pipeline / "latents", "--out", run, "--steps", "3", "--resume",
        "--num-workers", "0", "--device", "cpu")
    after = load_checkpoint(run)
    assert (before.step, after.step) == (2, 3)
    assert [r["step"] for r in read_metrics(run)] == [2, 3]  # the last step of each session is logged
    assert after.meta["dit_config"] == before.meta["dit_config"]  # the run's own model, --lightning included
    assert any(not torch.equal(after.model[k], v) for k, v in before.model.items())


BAD_INPUTS = {
    "missing checkpoint": ("does not exist", "reconstruct", "--ckpt", "{tmp}/missing", "--data", "{heldout}",
                           "--out", "{tmp}/o"),
    "empty data folder": ("contains no images", "train", "ae", "--data", "{tmp}/empty", "--out", "{tmp}/r",
                          "--preset", "tiny", "--device", "cpu"),
    "not a latent cache": ("not a finished latent cache", "train", "dit", "--latents", "{tmp}/empty",
                           "--out", "{tmp}/d"),
    "wrong kind of checkpoint": ("holds a DiT, not an autoencoder", "reconstruct", "--ckpt", "{pipeline}/dit", "--data",
                                 "{heldout}", "--out", "{tmp}/o"),
    "existing run": ("already holds checkpoints", "train", "ae", "--data", "{heldout}", "--out", "{pipeline}/s1",
                     "--preset", "tiny", "--steps", "1", "--device", "cpu"),
    "later stage without init": ("pass --init", "train", "ae", "--data", "{heldout}", "--out", "{tmp}/x",
                                 "--stage", "3"),
    "unknown preset": ("'XXL' is not one of", "train", "ae", "--data", "{heldout}", "--out", "{tmp}/x",
                       "--preset", "XXL"),
    "teacher weights for a random-teacher run": ("trained with a random ViT", "reconstruct", "--ckpt", "{pipeline}/s2", "--data", "{heldout}",
                                "--out", "{tmp}/o", "--teacher-weights", "{tmp}/missing.pth"),
    # What a careless or hostile user tried (issue "Reliability and security"); the files are made below.
    "infinite lr in a config": ("train.lr: expected a finite number, got inf", "train", "ae", "--data", "{heldout}",
                                "--out", "{tmp}/r", "--preset", "tiny", "--config", "{tmp}/inf.yaml"),
    "misspelt config key": ("unknown key 'lrr' in train (did you mean 'lr'?)", "train", "ae", "--data",
                            "{heldout}", "--out", "{tmp}/r", "--config", "{tmp}/typo.yaml"),
    "misspelt config section": ("did you mean 'train'?", "train", "dit", "--latents", "{pipeline}/latents",
                                "--out", "{tmp}/d", "--config", "{tmp}/section.yaml"),
    "a string for a number": ("train.batch_size: expected an integer, got 'big'", "train", "ae", "--data",
                              "{heldout}", "--out", "{tmp}/r", "--config", "{tmp}/string.yaml"),
    "a cadence of zero": ("train.ckpt_every: must be at least 1, got 0", "train", "ae", "--data", "{heldout}",
                          "--out", "{tmp}/r", "--config", "{tmp}/zero.yaml"),
    "malformed yaml": ("is not valid YAML", "train", "ae", "--data", "{heldout}", "--out", "{tmp}/r",
                       "--config", "{tmp}/broken.yaml"),
    "nan learning rate flag": ("'nan' is not a finite number", "train", "ae", "--data", "{heldout}", "--out",
                               "{tmp}/r", "--lr", "nan"),
    "nan guidance": ("'nan' is not a finite number", "sample", "--ae", "{pipeline}/s2", "--dit", "{pipeline}/dit",
                     "--out", "{tmp}/s", "--cfg", "nan"),
    "negative bench rows": ("expected integers of at least 1", "bench", "kernels", "--rows", "-5"),
    "zero bench width": ("expected integers of at least 1", "bench", "kernels", "--dim", "0"),
    "infinite gpu memory": ("'inf' is not a finite number", "bench", "memory", "--gpu-memory", "inf"),
    "unknown bench implementation": ("unknown implementation nope", "bench", "kernels", "--op", "dist", "--impl",
                                     "nope"),
    "a text file as npz": ("is not an .npz", "eval", "gen", "--samples", "{tmp}/text.npz", "--ref",
                           "{tmp}/text.npz"),
    "nothing decodes": ("no readable image on any rank", "train", "ae", "--data", "{tmp}/corrupt", "--out",
                        "{tmp}/r", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--num-workers", "0",
                        "--device", "cpu", "--config", "{pipeline}/fast.yaml"),
    "nothing decodes to encode": ("could be decoded", "encode", "--ckpt", "{pipeline}/s2", "--data",
                                  "{tmp}/corrupt", "--out", "{tmp}/lat", "--num-workers", "0"),
    "resume with another lr": ("train.lr: 0.0001 -> 0.5", "train", "ae", "--data", "{heldout}", "--out",
                               "{tmp}/s2", "--resume", "--lr", "0.5", "--device", "cpu"),
    "resume on other data": ("(another listing)", "train", "ae", "--data", "{tmp}/other", "--out", "{tmp}/s2",
                             "--resume", "--device", "cpu"),
    "corrupt training state": ("is unreadable", "train", "ae", "--data", "{heldout}", "--out", "{tmp}/broken_run",
                               "--resume", "--device", "cpu"),
    "truncated latent shard": ("cannot be used (it is truncated)", "train", "dit", "--latents", "{tmp}/cut_latents",
                               "--out", "{tmp}/d"),
    "export into a non-empty folder": ("is not empty; pass --force", "export", "{pipeline}/dit", "{pipeline}/s1"),
    "export of a missing run": ("does not exist", "export", "{tmp}/missing", "{tmp}/out"),
    "export of a random vit without it": ("include_vit=False needs a ViT read from a teacher-weights file",
                                          "export", "{pipeline}/s2", "{tmp}/out", "--no-vit"),
}


def _bad_files(tmp_path, pipeline, heldout):
    """The files the bad-input cases name."""
    (tmp_path / "empty").mkdir()
    for name, text in {"inf.yaml": "train:\n  lr: .inf\n", "typo.yaml": "train:\n  lrr: 0.1\n",
                       "section.yaml": "trian:\n  lr: 0.1\n", "string.yaml": "train:\n  batch_size: big\n",
                       "zero.yaml": "train:\n  ckpt_every: 0\n", "broken.yaml": "train: [lr: 1\n",
                       "text.npz": "not an archive"}.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "corrupt").mkdir()
    for i in range(3):
        (tmp_path / "corrupt" / f"{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    shutil.copytree(pipeline / "s2", tmp_path / "s2")
    shutil.copytree(heldout, tmp_path / "other", ignore=shutil.ignore_patterns("00000.png"))
    shutil.copytree(pipeline / "s2", tmp_path / "broken_run")
    latest = (tmp_path / "broken_run" / "checkpoints" / "latest").read_text().strip()
    (tmp_path / "broken_run" / "checkpoints" / latest / "state.json").write_text("{")
    shutil.copytree(pipeline / "latents", tmp_path / "cut_latents")
    shard = tmp_path / "cut_latents" / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_with_one_line(case, pipeline, photos, tmp_path):
    _bad_files(tmp_path, pipeline, photos["heldout"])
    reason, *args = BAD_INPUTS[case]
    _fails_with(reason, *(a.format(tmp=tmp_path, pipeline=pipeline, heldout=photos["heldout"]) for a in args))




def test_samples_of_another_latent_shape_are_refused(pipeline, tmp_path):
    _fails_with("the autoencoder decodes", "sample", "--ae", pipeline / "s2", "--dit", _other_dit(tmp_path),
                "--out", tmp_path / "s", "--num", "1", "--steps", "1")


def test_a_bug_keeps_its_traceback(monkeypatch, pipeline, photos, tmp_path):
    """Only input errors become one line: anything else (out of memory, a bug) surfaces as it is."""
    import dinosae.evaluation.reconstruction as reconstruction

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(reconstruction, "reconstruct_folder", broken)
    result = _run("eval", "recon", "--ckpt", pipeline / "s2", "--data", photos["heldout"])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert not any(line.startswith("Error:") for line in result.output.splitlines())


def _other_dit(tmp_path):
    """A DiT trained on latents of another shape (8-dim tokens) than the autoencoder's."""
    import torch

    import sphere_ops
    from dinosae.config import DiTTrainConfig
    from dinosae.data.latents import LatentCache, write_meta, write_shard
    from dinosae.train.dit import dit_config_for, train_dit

    cache = tmp_path / "other_latents"
    cache.mkdir()
    write_shard(cache, 0, sphere_ops.random_uniform((8, 4), 8), torch.zeros(8, dtype=torch.long))
    write_meta(cache, {"num": 8, "tokens": 4, "dim": 8, "shard_counts": [8], "num_shards": 1, "flip": False})
    config = dit_config_for(LatentCache(cache), "tiny")
    train_dit(tmp_path / "other_dit", cache, config, DiTTrainConfig(steps=1, batch_size=4, num_workers=0),
              device="cpu")
    return tmp_path / "other_dit"


@pytest.mark.slow  # the whole pipeline through the command line; the slow tier runs it (.ci/run)
def test_demo_quick_runs_end_to_end(tmp_path):
    output = _ok("demo", "--quick", "--out", tmp_path / "demo", "--device", "cpu")
    assert "report:" in output and "random" in output
    report = (tmp_path / "demo" / "report.html").read_text()
    for image in ("recon/stages.png", "samples/grid.png", "ae_l1.png", "ae_lpips.png", "dit_loss.png"):
        assert image in report and (tmp_path / "demo" / image).is_file()
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["random_teacher"] is True
    recon = metrics["recon"]
    assert metrics["recon_split"] == "unseen" and recon["images"] == 28  # 4 photos never trained on, 7 views each
    assert 5.0 < recon["psnr"] < 60.0 and 0.0 < recon["lpips"] < 1.0 and recon["stripe_score"] > 0
    assert [stage["stage"] for stage in metrics["stages"]] == [1, 2, 3, 4]
    assert all({"heldout", "unseen"} <= set(stage) for stage in metrics["stages"])
    baseline = metrics["linear_baseline"]
    assert (baseline["components"], baseline["patch"]) == (192, 16)
    assert all(10.0 < baseline[split]["psnr"] < 60.0 for split in ("heldout", "unseen"))
    assert "linear baseline: patch PCA" in report and "randomly initialized" in report


def test_the_command_line_starts_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, dinosae.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_probe_sweep_default_matches_the_library():
    from dinosae.cli.evaluation import eval_probe
    from dinosae.evaluation.probe import SWEEP_WEIGHT_DECAYS

    default = next(p.default for p in eval_probe.params if p.name == "sweep")
    assert tuple(float(v) for v in default.split(",")) == SWEEP_WEIGHT_DECAYS


def test_the_hae_recipe_sets_the_papers_settings_and_flags_win(pipeline, photos, tmp_path):
    from dinosae.config.recipes import gaussian_radius
    from dinosae.io.checkpoint import load_checkpoint

    common = ["--num-workers", "0", "--device", "cpu", "--recipe", "hae"]
    _ok("train", "ae", "--data", photos["heldout"], "--out", tmp_path / "ae", "--preset", "tiny", "--stage", "2",
        "--init", pipeline / "s1", "--steps", "4", "--batch-size", "4", "--lr", "1e-4", "--config",
        _lpips_off(tmp_path), *common)
    meta = json.loads((tmp_path / "ae" / "config.json").read_text())
    model, train = meta["ae_config"], meta["train_config"]
    assert (model["latent_scale"], model["decode_scale"]) == ("raw_tokens", 14.0)
    assert (train["noise"], train["noise_per"], train["latent_noise"], train["noise_max_start"], train["noise_max"],
            train["noise_ramp_steps"]) == ("gaussian", "batch", True, 0.8, 1.2, 2)
    assert (train["train_stem"], train["align_weight"], train["gan_adaptive"], train["betas"], train["ema_decay"]) == (
        False, 0.0, False, [0.5, 0.9], 0.9975)
    assert (train["lr"], train["batch_size"]) == (1e-4, 4)  # flags win over the recipe
    final = load_checkpoint(tmp_path / "ae")
    assert final.step == 4 and all(torch.isfinite(v).all() for v in final.model.values())

    _ok("train", "dit", "--latents", pipeline / "latents", "--out", tmp_path / "dit", "--preset", "tiny",
        "--steps", "2", "--batch-size", "8", *common)
    meta = json.loads((tmp_path / "dit" / "config.json").read_text())
    model, train, radius = meta["dit_config"], meta["train_config"], gaussian_radius(192)
    assert (model["radius"], model["project_output"], model["rope"]) == (radius, False, True)
    assert (train["radial_weight"], train["shift"], train["precision"], train["lr"]) == (0.1, 8.0, "fp32", 2e-4)
    assert load_checkpoint(tmp_path / "dit").step == 2
