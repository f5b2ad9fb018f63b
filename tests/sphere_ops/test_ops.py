"""The public ops (``sphere_ops.ops``): every op keeps its input's leading dims and dtype, takes ``t`` in every
documented form, and agrees with the float64 reference on random inputs, whichever backend serves it."""

from __future__ import annotations

import pytest
import torch

import sphere_ops
from sphere_ops import reference

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPES = [(7, 16), (2, 3, 16), (2, 2, 2, 5)]


def _points(shape, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(shape, generator=generator, dtype=torch.float64), dim=-1).to(dtype)


def _outputs(x, y, u, t):
    return {"normalize": sphere_ops.normalize(u), "proju": sphere_ops.proju(x, u), "dist": sphere_ops.dist(x, y),
            "expmap": sphere_ops.expmap(x, sphere_ops.proju(x, u)), "logmap": sphere_ops.logmap(x, y),
            "geodesic": sphere_ops.geodesic(x, y, t), "transp": sphere_ops.transp(x, y, sphere_ops.proju(x, u))}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_leading_dims_and_dtype_are_kept(shape, dtype):
    x, y, u = _points(shape, dtype, 0), _points(shape, dtype, 1), _points(shape, dtype, 2)
    for name, out in _outputs(x, y, u, 0.3).items():
        assert out.dtype == dtype, name
        assert out.shape == (shape[:-1] if name == "dist" else shape), name


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_agrees_with_the_float64_reference(shape):
    x64, y64, u64 = _points(shape, torch.float64, 3), _points(shape, torch.float64, 4), _points(shape, torch.float64, 5)
    ours = _outputs(x64.float(), y64.float(), u64.float(), 0.3)
    expected = {"normalize": reference.normalize(u64), "proju": reference.proju(x64, u64),
                "dist": reference.dist(x64, y64), "expmap": reference.expmap(x64, reference.proju(x64, u64)),
                "logmap": reference.logmap(x64, y64), "geodesic": reference.geodesic(x64, y64, torch.tensor(0.3, dtype=torch.float64)),
                "transp": reference.transp(x64, y64, reference.proju(x64, u64))}
    for name, out in ours.items():
        torch.testing.assert_close(out.double(), expected[name], rtol=1e-5, atol=2e-6, msg=name)


def test_time_may_be_a_float_or_a_broadcastable_tensor():
    x, y = _points((3, 4, 8), torch.float32, 6), _points((3, 4, 8), torch.float32, 7)
    times = torch.tensor([0.0, 0.4, 1.0])
    batched = sphere_ops.geodesic(x, y, times.view(3, 1, 1))
    for i, t in enumerate(times.tolist()):
        torch.testing.assert_close(batched[i], sphere_ops.geodesic(x[i], y[i], t), rtol=0, atol=1e-6)
    point, velocity = sphere_ops.geodesic_velocity(x, y, times.view(3, 1, 1))
    torch.testing.assert_close(point, batched, rtol=0, atol=1e-6)
    torch.testing.assert_close(point[0], x[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(point[2], y[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(velocity.norm(dim=-1), sphere_ops.dist(x, y), rtol=1e-5, atol=1e-6)
