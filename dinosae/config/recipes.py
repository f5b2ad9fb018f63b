"""Training recipes: each version of the paper's settings under one name, as config overrides.

``"dino-sae"`` is this toolkit's defaults (the paper's v1 and the official
release's commands: four autoencoder stages, decoders on sqrt(D)-scaled unit
latents, RFM on unit spheres). ``"hae"`` is the paper's v2 ("Hyperspherical
Autoencoder", arXiv 2601.22904v2, code ``wkdgnsgo/HAE``):

- autoencoder: two stages. Stage 2 freezes the whole encoder, trains the
  decoder with a hinge GAN (weight 0.5, no adaptive weight) after two
  discriminator-only epochs of forty, on raw final-norm tokens smoothed with
  Gaussian noise of a per-batch sigma ~ U(0, tau), tau rising from 0.8 to 1.2
  over the first half; AdamW 5e-5, betas (0.5, 0.9), EMA 0.9975, batch 512.
  Generated latents decode at token norm s_vae = 14.
- DiT: LightningDiT on spheres of radius R = E|N(0, I_D)| (32 at D = 1024),
  an unprojected velocity with its radial part penalized (0.1), time shift 8,
  logit-normal times, AdamW 2e-4, betas (0.9, 0.95), EMA 0.9995, batch 1024,
  float32 (bf16 was unstable for its authors).
- sampling: 50 Euler steps with the exponential map (``dinosae sample``'s defaults).

Overrides apply over a preset and under a config file and flags.

Example:
    >>> round(dit_model_recipe("hae", dim=1024)["radius"], 3)
    31.992
    >>> ae_train_recipe("hae", stage=2, steps=400)["noise_ramp_steps"]
    200
"""

from __future__ import annotations

import math
from typing import Any

from dinosae.config.dit import LIGHTNING_FLAGS

RECIPES = ("dino-sae", "hae")


def _check(recipe: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")


def gaussian_radius(dim: int) -> float:
    """E|N(0, I_dim)| = sqrt(2) Gamma((dim + 1) / 2) / Gamma(dim / 2), about sqrt(dim - 1/2)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def ae_model_recipe(recipe: str) -> dict[str, Any]:
    """``AEConfig`` overrides."""
    _check(recipe)
    return {"latent_scale": "raw_tokens", "decode_scale": 14.0} if recipe == "hae" else {}


def ae_train_recipe(recipe: str, stage: int, steps: int) -> dict[str, Any]:
    """``AETrainConfig`` overrides of one stage of a run of ``steps`` steps."""
    _check(recipe)
    if recipe == "dino-sae":
        return {}
    if stage == 1:
        return {"lr": 1e-5, "betas": (0.9, 0.999), "align_weight": 0.5, "l1_weight": 1.0, "lpips_weight": 1.0,
                "ema_decay": 0.9999, "batch_size": 512}
    if stage == 2:
        return {"train_stem": False, "align_weight": 0.0, "gan_weight": 0.5, "gan_adaptive": False,
                "disc_start": 0, "gan_start": steps // 20, "lr": 5e-5, "disc_lr": 5e-5, "betas": (0.5, 0.9),
                "ema_decay": 0.9975, "batch_size": 512, "latent_noise": True, "noise": "gaussian",
                "noise_per": "batch", "noise_max_start": 0.8, "noise_max": 1.2, "noise_ramp_steps": steps // 2}
    raise ValueError(f"the HAE recipe has two autoencoder stages, not stage {stage}")


def dit_model_recipe(recipe: str, dim: int) -> dict[str, Any]:
    """``DiTConfig`` overrides for latents of width ``dim``."""
    _check(recipe)
    if recipe == "dino-sae":
        return {}
    return {**LIGHTNING_FLAGS, "radius": gaussian_radius(dim), "project_output": False}


def dit_train_recipe(recipe: str, dim: int) -> dict[str, Any]:
    """``DiTTrainConfig`` overrides for latents of width ``dim``."""
    _check(recipe)
    if recipe == "dino-sae":
        return {}
    return {"radial_weight": 0.1, "shift": 8.0, "time_sampler": "logit-normal",
            "lr": 2e-4, "betas": (0.9, 0.95), "ema_decay": 0.9995, "precision": "fp32", "batch_size": 1024}
