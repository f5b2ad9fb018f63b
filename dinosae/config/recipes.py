"""Training recipes: each version of the paper's settings as small config files (``recipes/<name>/``).

``"dino-sae"`` is this toolkit's defaults (the paper's v1 and the official
release's commands: four autoencoder stages, decoders on sqrt(D)-scaled unit
latents, RFM on unit spheres); its stage files are the stage rules, which a
stage of any recipe takes where its own file is silent. ``"hae"`` is the
paper's v2 ("Hyperspherical Autoencoder", arXiv 2601.22904v2, code
``wkdgnsgo/HAE``): two autoencoder stages and LightningDiT on spheres of
radius E|N(0, I_D)| (``recipes/README.md``; each file says what it sets and why).

A file is read as a ``--config`` file is (``dinosae.config.base.read_overrides``);
:func:`derive` evaluates the two formulas a recipe may hold once the run's
steps and latent width are known.

Example:
    >>> RECIPES, recipe_file("hae", "ae-stage2")
    (('dino-sae', 'hae'), 'hae/ae-stage2.yaml')
    >>> stage_rules(3)["train_stem"], derive("steps / 20", "gan_start", steps=400)
    (False, 20)
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any

from dinosae.config.base import ConfigError, read_overrides

ROOT = Path(__file__).parent / "recipes"
RECIPES = tuple(sorted(p.name for p in ROOT.iterdir() if p.is_dir()))
DEFAULT_RECIPE = "dino-sae"
_STEPS_FRACTION = re.compile(r"^steps\s*/\s*(\d+)$")
GAUSSIAN_NORM = "E|N(0, I_D)|"


def recipe_file(recipe: str, name: str) -> str:
    """The recipe file ``name`` (``"ae-stage2"``, ``"dit"``) of ``recipe``, as ``"<recipe>/<name>.yaml"``."""
    return f"{recipe}/{name}.yaml"


@functools.cache
def _read(recipe: str, name: str) -> dict[str, dict[str, Any]]:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")
    path = ROOT / recipe_file(recipe, name)
    if not path.is_file():
        stages = sorted(int(p.stem.removeprefix("ae-stage")) for p in (ROOT / recipe).glob("ae-stage*.yaml"))
        what = f"autoencoder stage {name.removeprefix('ae-stage')}" if name.startswith("ae-stage") else name
        raise ValueError(f"the {recipe} recipe has no {what} (its stages: {stages})")
    return read_overrides(path)


def recipe_overrides(recipe: str, name: str) -> dict[str, dict[str, Any]]:
    """The ``model`` and ``train`` sections of a recipe file (copies: edits never reach the cache).

    Example:
        >>> recipe_overrides("hae", "dit")["model"]["radius"]
        'E|N(0, I_D)|'
        >>> recipe_overrides("hae", "ae-stage3")
        Traceback (most recent call last):
        ...
        ValueError: the hae recipe has no autoencoder stage 3 (its stages: [1, 2])
    """
    return {section: dict(values) for section, values in _read(recipe, name).items()}


def stages() -> list[int]:
    """The autoencoder's stages: those the default recipe has rules for.

    Example:
        >>> stages()
        [1, 2, 3, 4]
    """
    return sorted(int(p.stem.removeprefix("ae-stage")) for p in (ROOT / DEFAULT_RECIPE).glob("ae-stage*.yaml"))


def stage_rules(stage: int) -> dict[str, Any]:
    """What stage ``stage`` trains with by default: the ``train`` section of the default recipe's stage file."""
    if stage not in stages():
        raise ValueError(f"stage must be one of {stages()}, got {stage}")
    return recipe_overrides(DEFAULT_RECIPE, f"ae-stage{stage}").get("train", {})


def gaussian_radius(dim: int) -> float:
    """E|N(0, I_dim)| = sqrt(2) Gamma((dim + 1) / 2) / Gamma(dim / 2), about sqrt(dim - 1/2).

    Example:
        >>> round(gaussian_radius(1024), 3)
        31.992
    """
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def derive(value: Any, name: str, *, steps: int | None = None, dim: int | None = None) -> Any:
    """A recipe value with its formula evaluated: ``"steps / N"`` is the run's ``steps // N``, and
    ``"E|N(0, I_D)|"`` the mean norm of a standard Gaussian in R^dim; any other value is itself.

    Example:
        >>> derive("steps / 2", "noise_ramp_steps", steps=401), derive(0.5, "lr")
        (200, 0.5)
    """
    if not isinstance(value, str):
        return value
    fraction = _STEPS_FRACTION.match(value)
    if fraction is not None and steps is not None:
        if int(fraction.group(1)) < 1:
            raise ConfigError(f"{name}: {value!r} divides by zero")
        return steps // int(fraction.group(1))
    if value == GAUSSIAN_NORM and dim is not None:
        return gaussian_radius(dim)
    return value
