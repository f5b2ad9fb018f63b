"""The flow's vocabulary: plain names, readable without torch, refused in one line where a flow is built."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dinosae.flow import make_manifold, make_time_sampler, names, sample
from dinosae.models.dit import DiT
from dinosae.config import DiTConfig


def test_the_vocabulary_imports_without_torch():
    code = "import sys, dinosae.flow.names, dinosae.flow; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@pytest.mark.parametrize("build, message", [
    (lambda: make_manifold("spere", 8), "unknown manifold 'spere'; choose one of sphere, euclidean"),
    (lambda: make_time_sampler("normal"), "unknown time sampler 'normal'; choose one of uniform, logit-normal"),
    (lambda: DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, prediction="eps")),
     "unknown prediction 'eps'; choose one of velocity, x1"),
])
def test_an_unknown_name_is_refused_where_it_is_built(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value) == message


def test_the_names_are_those_the_flow_builds_from():
    assert [make_manifold(name, 8).name for name in names.MANIFOLDS] == list(names.MANIFOLDS)
    for name in names.TIME_SAMPLERS:
        make_time_sampler(name)
    assert names.SOLVERS == ("euler", "heun", "midpoint") and names.PREDICTIONS == ("velocity", "x1")
    assert callable(sample)
