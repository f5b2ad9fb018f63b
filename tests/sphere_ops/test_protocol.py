"""Every backend implements SphereKernels, whose ops are the spec table's, argument for argument."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from sphere_ops._spec import SPECS
from sphere_ops.backends import SphereKernels

from helpers import BACKENDS, at_angle, unit


def _kernels(backend: str) -> object:
    if backend == "torch":
        return importlib.import_module("sphere_ops.reference")
    return importlib.import_module(f"sphere_ops._{backend}").kernels


def _protocol_methods() -> dict[str, list[str]]:
    """Each method of the protocol and its parameter names (without self)."""
    return {
        name: list(inspect.signature(member).parameters)[1:]
        for name, member in vars(SphereKernels).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def test_the_protocol_states_every_op_of_the_spec_table_and_its_backward() -> None:
    expected = {"supports": ["x"]}
    for name, spec in SPECS.items():
        args = [a.name for a in spec.args]
        expected[name] = args
        expected[f"{name}_backward"] = [*spec.grad_names, *args]
    assert _protocol_methods() == expected


def test_every_op_takes_a_point_first() -> None:
    # The first argument fixes the rows, dtype and device of a call (ops.py, _launch.py).
    assert all(spec.args[0].kind == "point" for spec in SPECS.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_implements_the_protocol(backend: str) -> None:
    kernels = _kernels(backend)
    assert isinstance(kernels, SphereKernels)
    for name, params in _protocol_methods().items():
        assert list(inspect.signature(getattr(kernels, name)).parameters) == params, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_velocity_gradient_is_the_geodesic_backward(backend: str) -> None:
    kernels = _kernels(backend)
    x0 = unit(5, 7, dtype=torch.float32)
    x1, t, grad = at_angle(x0, 1.1).float(), torch.rand(5, 1), torch.randn(5, 7)
    without = kernels.geodesic_velocity_backward(grad, None, x0, x1, t)
    zero = kernels.geodesic_velocity_backward(grad, torch.zeros_like(grad), x0, x1, t)
    for got, geodesic, want in zip(without, kernels.geodesic_backward(grad, x0, x1, t), zero):
        torch.testing.assert_close(got, geodesic, rtol=0, atol=0)
        torch.testing.assert_close(got, want)
