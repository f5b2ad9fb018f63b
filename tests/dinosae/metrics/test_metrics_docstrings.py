"""The examples in the metrics' docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["dinosae.metrics", "dinosae.metrics.image", "dinosae.metrics.lpips", "dinosae.metrics.inception",
           "dinosae.metrics.fid", "dinosae.metrics.precision_recall", "dinosae.metrics.probe",
           "dinosae.metrics.folder"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
