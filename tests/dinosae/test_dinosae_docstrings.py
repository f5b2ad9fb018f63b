"""The examples in the docstrings of the training, data and model modules run and print what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "dinosae.config", "dinosae.data", "dinosae.latents", "dinosae.losses", "dinosae.photos", "dinosae.plots",
    "dinosae.sample", "dinosae.evaluate", "dinosae.train.checkpoint", "dinosae.train.ema", "dinosae.train.rng",
    "dinosae.train.runlog", "dinosae.train.distributed", "dinosae.train.ae", "dinosae.models.layers",
    "dinosae.models.stem", "dinosae.models.decoder", "dinosae.models.decoder_blocks",
    "dinosae.models.discriminator", "dinosae.models.encoder", "dinosae.models.autoencoder", "dinosae.models.vit",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
