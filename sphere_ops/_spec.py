"""The sphere ops, declared once.

Each entry of :data:`SPECS` names an op's arguments and outputs; from it
:mod:`sphere_ops.ops` generates the custom ops (forward and backward, their
schemas, fakes, autograd and vmap rules) and :mod:`sphere_ops._launch` the
compiled backends' entry points. What every backend implements for them is
:class:`sphere_ops.backends.SphereKernels`.

The first argument of every op is a point: it fixes the rows, the dtype and
the device of the call. Every tensor argument gets a gradient (``t`` included);
scalars get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, TypeVar

__all__ = ["Arg", "Output", "OpSpec", "SPECS", "pack"]

Item = TypeVar("Item")

Kind = Literal["point", "time", "float"]
_SCHEMA_TYPES = {"point": "Tensor", "time": "Tensor", "float": "float"}


@dataclass(frozen=True)
class Arg:
    """One argument: ``point`` (``(..., D)`` rows), ``time`` (one value per row, shape
    ``(..., 1)`` in the compute dtype) or ``float`` (a Python scalar)."""

    name: str
    kind: Kind = "point"

    @property
    def is_tensor(self) -> bool:
        return self.kind != "float"


@dataclass(frozen=True)
class Output:
    """One output, with the dtype and device of argument ``like`` and its shape,
    or its shape without the last dim when ``per_row``."""

    name: str
    like: str
    per_row: bool = False

    def shape(self, like_shape: Sequence[int]) -> Sequence[int]:
        return like_shape[:-1] if self.per_row else like_shape


@dataclass(frozen=True)
class OpSpec:
    """One op: ``sphere_ops::<name>`` and ``sphere_ops::<name>_backward``.

    ``part_of`` names the op whose fused kernels compute this one's outputs as
    their leading outputs (geodesic is geodesic_velocity without the velocity):
    compiled backends run that op's kernels and skip the other outputs.
    """

    name: str
    args: tuple[Arg, ...]
    outputs: tuple[Output, ...]
    part_of: str | None = None

    @property
    def kernel(self) -> str:
        """The name of the fused kernel pair that computes this op."""
        return self.part_of or self.name

    @cached_property
    def tensor_positions(self) -> tuple[int, ...]:
        """Where the tensor arguments stand: each gets a gradient, in this order."""
        return tuple(i for i, a in enumerate(self.args) if a.is_tensor)

    @cached_property
    def grad_args(self) -> tuple[Arg, ...]:
        """The arguments that get a gradient, in order."""
        return tuple(self.args[i] for i in self.tensor_positions)

    @cached_property
    def grad_names(self) -> tuple[str, ...]:
        """The backward's leading arguments: the gradients of the outputs."""
        if len(self.outputs) == 1:
            return ("grad",)
        return tuple(f"grad_{o.name}" for o in self.outputs)

    @cached_property
    def like_positions(self) -> tuple[int, ...]:
        """For each output, where the argument it is like stands."""
        names = [a.name for a in self.args]
        return tuple(names.index(o.like) for o in self.outputs)

    def likes(self, args: Sequence[Item]) -> list[Item]:
        """For each output, the argument it is like."""
        return [args[i] for i in self.like_positions]

    @property
    def schema(self) -> str:
        return f"({_params(self.args)}) -> {_returns(len(self.outputs))}"

    @property
    def backward_schema(self) -> str:
        grads = ", ".join(f"Tensor {g}" for g in self.grad_names)
        return f"({grads}, {_params(self.args)}, str backend) -> {_returns(len(self.grad_args))}"


def pack(values: list[Item]) -> Item | tuple[Item, ...]:
    """Results as an op returns them: one alone, more as a tuple."""
    return values[0] if len(values) == 1 else tuple(values)


def _params(args: tuple[Arg, ...]) -> str:
    return ", ".join(f"{_SCHEMA_TYPES[a.kind]} {a.name}" for a in args)


def _returns(n: int) -> str:
    return "Tensor" if n == 1 else f"({', '.join(['Tensor'] * n)})"


_X, _Y, _U, _V = Arg("x"), Arg("y"), Arg("u"), Arg("v")
_X0, _X1, _T = Arg("x0"), Arg("x1"), Arg("t", "time")
_XT = Output("xt", "x0")

SPECS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("normalize", (_X, Arg("eps", "float")), (Output("out", "x"),)),
        OpSpec("proju", (_X, _U), (Output("out", "u"),)),
        OpSpec("dist", (_X, _Y), (Output("out", "x", per_row=True),)),
        OpSpec("expmap", (_X, _U), (Output("out", "x"),)),
        OpSpec("logmap", (_X, _Y), (Output("out", "x"),)),
        OpSpec("geodesic", (_X0, _X1, _T), (_XT,), part_of="geodesic_velocity"),
        OpSpec("geodesic_velocity", (_X0, _X1, _T), (_XT, Output("ut", "x0"))),
        OpSpec("transp", (_X, _Y, _V), (Output("out", "v"),)),
    )
}
