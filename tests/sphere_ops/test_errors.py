"""Bad input gets an error that names the argument and the problem."""

import pytest
import torch

import sphere_ops
from sphere_ops import backends


def _x(*shape: int, **kwargs) -> torch.Tensor:
    return sphere_ops.normalize(torch.randn(*shape, **kwargs))


def test_mismatched_shapes_name_both_arguments() -> None:
    with pytest.raises(ValueError, match=r"y has shape \(3, 5\) but x has shape \(3, 4\)"):
        sphere_ops.logmap(_x(3, 4), _x(3, 5))
    with pytest.raises(ValueError, match=r"x1 has shape"):
        sphere_ops.geodesic(_x(2, 4), _x(3, 4), 0.5)
    with pytest.raises(ValueError, match=r"v has shape"):
        sphere_ops.transp(_x(2, 4), _x(2, 4), _x(2, 5))


def test_integer_and_mismatched_dtypes() -> None:
    with pytest.raises(TypeError, match=r"x must be float32, float64, bfloat16 or float16, got torch.int64"):
        sphere_ops.normalize(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"u is torch.float64 but x is torch.float32"):
        sphere_ops.expmap(_x(2, 3), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        sphere_ops.dist([1.0, 0.0], _x(2))


def test_tensors_on_different_devices() -> None:
    with pytest.raises(ValueError, match=r"y is on meta but x is on cpu"):
        sphere_ops.dist(_x(2, 3), torch.empty(2, 3, device="meta"))


@pytest.mark.parametrize("shape", [(3, 1), (1,), ()])
def test_rows_need_two_coordinates(shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., D\) with D >= 2"):
        sphere_ops.normalize(torch.ones(shape))
    with pytest.raises(ValueError, match=r"D must be >= 2"):
        sphere_ops.random_uniform((3,), 1)


def test_time_that_does_not_broadcast() -> None:
    x0, x1 = _x(4, 16, 8), _x(4, 16, 8)
    with pytest.raises(ValueError, match=r"t of shape \(4,\) does not broadcast to x\[\.\.\., :1\] of shape \(4, 16, 1\)"):
        sphere_ops.geodesic(x0, x1, torch.rand(4))
    with pytest.raises(TypeError, match=r"t must be a floating tensor"):
        sphere_ops.geodesic(x0, x1, torch.ones(4, 1, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"t must be a float or a tensor, got str"):
        sphere_ops.geodesic(x0, x1, "0.5")
    assert sphere_ops.geodesic(x0, x1, torch.rand(4, 1, 1)).shape == x0.shape
    assert sphere_ops.geodesic(x0, x1, torch.tensor(0.5)).shape == x0.shape


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match=r"unknown sphere_ops backend 'cuda'; choose one of auto, torch, triton, cpp"):
        sphere_ops.backend("cuda")


def test_environment_variable_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPHERE_OPS_BACKEND", "torch")
    assert sphere_ops.current_backend() == "torch"
    with sphere_ops.backend("cpp"):
        assert sphere_ops.current_backend() == "cpp"
    monkeypatch.setenv("SPHERE_OPS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="unknown sphere_ops backend 'nonsense'"):
        sphere_ops.normalize(_x(2, 3))


def test_set_backend_is_overridden_by_a_scope() -> None:
    try:
        sphere_ops.set_backend("torch")
        assert sphere_ops.current_backend() == "torch"
        with sphere_ops.backend("triton"):
            assert sphere_ops.current_backend() == "triton"
        assert sphere_ops.current_backend() == "torch"
    finally:
        backends._global = None


def test_unavailable_backend_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with sphere_ops.backend("triton"), pytest.raises(
        sphere_ops.BackendUnavailable, match=r"triton kernels need a CUDA tensor \(got cpu\); on CPU set TRITON_INTERPRET=1"
    ):
        sphere_ops.normalize(_x(2, 3))
    monkeypatch.setattr(backends, "_load_cpp", lambda: "the compiled extension is missing")
    with sphere_ops.backend("cpp"), pytest.raises(
        sphere_ops.BackendUnavailable, match="'cpp' is unavailable: the compiled extension is missing"
    ):
        sphere_ops.normalize(_x(2, 3))
    assert backends.resolve("auto", torch.device("cpu")) == "torch"


def test_auto_picks_the_compiled_extension_on_cpu() -> None:
    assert backends.resolve("auto", torch.device("cpu")) == "cpp"


def test_every_backend_runs_in_the_test_environment() -> None:
    """The backend tests are parametrized over what is available: none may go missing silently."""
    from helpers import BACKENDS

    assert BACKENDS == ["torch", "cpp", "triton"]
