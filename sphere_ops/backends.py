"""Choosing the kernels that serve an op: ``torch``, ``triton``, ``cpp`` or ``auto``.

The choice comes from, in order: the innermost ``with backend(name):`` block,
``set_backend(name)``, the ``SPHERE_OPS_BACKEND`` environment variable, and
``"auto"``. ``auto`` takes the fastest backend available for a tensor's device:
the compiled extension on CPU, and on CUDA the compiled extension when it was
built with CUDA, else Triton. Naming a backend that cannot serve a tensor
raises an error that says why.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
from types import ModuleType
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

NAMES = ("auto", "torch", "triton", "cpp")
ENV_VAR = "SPHERE_OPS_BACKEND"

_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("sphere_ops_backend", default=None)
_global: str | None = None


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine or for this tensor."""


@runtime_checkable
class SphereKernels(Protocol):
    """What a backend implements: every op of ``sphere_ops._spec.SPECS`` and its backward.

    Implemented by :mod:`sphere_ops.reference` (the specification, which takes
    every tensor) and the ``kernels`` of ``sphere_ops._triton`` and
    ``sphere_ops._cpp``. Inputs are ``(..., D)`` tensors of one shape, dtype
    and device; ``t`` is ``x0[..., :1]``-shaped in the compute dtype. Results
    have the dtype of the argument they are like. A backward takes the
    gradients of the outputs, then the op's arguments, and returns one
    gradient per tensor argument.
    """

    def supports(self, x: Tensor) -> bool:
        """Whether these kernels take x (the reference serves what they decline)."""

    def normalize(self, x: Tensor, eps: float) -> Tensor: ...

    def normalize_backward(self, grad: Tensor, x: Tensor, eps: float) -> Tensor: ...

    def proju(self, x: Tensor, u: Tensor) -> Tensor: ...

    def proju_backward(self, grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]: ...

    def dist(self, x: Tensor, y: Tensor) -> Tensor: ...

    def dist_backward(self, grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def expmap(self, x: Tensor, u: Tensor) -> Tensor: ...

    def expmap_backward(self, grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]: ...

    def logmap(self, x: Tensor, y: Tensor) -> Tensor: ...

    def logmap_backward(self, grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor: ...

    def geodesic_backward(self, grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def geodesic_velocity(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]: ...

    def geodesic_velocity_backward(
        self, grad_xt: Tensor, grad_ut: Tensor | None, x0: Tensor, x1: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``grad_ut=None`` means the velocity is unused: then this is ``geodesic_backward``."""

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor: ...

    def transp_backward(self, grad: Tensor, x: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


def _validate(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown sphere_ops backend {name!r}; choose one of {', '.join(NAMES)}")
    return name


def current() -> str:
    """The backend name in force here (before ``auto`` is resolved)."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _global is not None:
        return _global
    return _validate(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto")


def set_backend(name: str) -> None:
    """Set the backend for this process (overridden by ``with backend(...)``)."""
    global _global
    _global = _validate(name)


class backend(contextlib.ContextDecorator):
    """Use a backend inside a ``with`` block (or as a decorator).

    Example:
        >>> import sphere_ops
        >>> x = sphere_ops.random_uniform((4,), 8)
        >>> with sphere_ops.backend("torch"):
        ...     y = sphere_ops.normalize(x)
    """

    def __init__(self, name: str) -> None:
        self.name = _validate(name)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> "backend":
        self._tokens.append(_scoped.set(self.name))
        return self

    def __exit__(self, *exc: object) -> None:
        _scoped.reset(self._tokens.pop())


@functools.cache
def _load_cpp() -> ModuleType | str:
    try:
        return importlib.import_module("sphere_ops._C")
    except ImportError as err:
        return f"the compiled extension sphere_ops._C is not importable ({err}); reinstall with `pip install .`"


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_problem(device: torch.device) -> str | None:
    if not _triton_installed():
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (
        f"triton kernels need a CUDA tensor (got {device.type}); on CPU set TRITON_INTERPRET=1"
        " before anything imports triton"
    )


def cpp_problem(device: torch.device) -> str | None:
    """Why the compiled extension cannot serve tensors on ``device`` (None if it can)."""
    ext = _load_cpp()
    if isinstance(ext, str):
        return ext
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not ext.has_cuda():
            return "sphere_ops._C was built without CUDA (no CUDA compiler was found at build time)"
        return None
    return f"the compiled extension has no kernels for {device.type} tensors"


def available(name: str, device: torch.device | str = "cpu") -> bool:
    """Whether ``name`` can serve tensors on ``device``."""
    device = torch.device(device)
    if name in ("torch", "auto"):
        return True
    if name == "triton":
        return _triton_problem(device) is None
    return cpp_problem(device) is None


def resolve(name: str, device: torch.device) -> str:
    """The concrete backend (``torch``, ``triton`` or ``cpp``) for a tensor on ``device``."""
    if name == "auto":
        if cpp_problem(device) is None:
            return "cpp"
        if device.type == "cuda" and _triton_problem(device) is None:
            return "triton"
        return "torch"
    if name == "triton":
        problem = _triton_problem(device)
    elif name == "cpp":
        problem = cpp_problem(device)
    else:
        problem = None
    if problem is not None:
        raise BackendUnavailable(f"sphere_ops backend {name!r} is unavailable: {problem}")
    return name
