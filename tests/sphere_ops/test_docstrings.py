"""The examples in the public docstrings run and print what they show."""

import doctest
import importlib

import pytest
import torch

import sphere_ops

MODULES = ["sphere_ops", "sphere_ops.ops", "sphere_ops.random", "sphere_ops.vmf", "sphere_ops.backends", "sphere_ops.manifolds", "sphere_ops.flow_matching"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch, "sphere_ops": sphere_ops}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name == "sphere_ops.backends"
