"""The CUDA paths: the triton and cpp backends on a GPU against the float64 reference.

Run by bench/gpu_check.sh (SPHERE_OPS_TEST_DEVICE=cuda pytest -m cuda); skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch

import sphere_ops
from sphere_ops import reference as R
from sphere_ops._spec import SPECS

from helpers import at_angle, max_rel, tangent, tolerance, unit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

GPU_BACKENDS = ["triton", "cpp", "auto"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _inputs(d: int, dtype: torch.dtype, rows: int = 300) -> dict[str, torch.Tensor]:
    x = unit(rows, d)
    return {
        "x": x,
        "y": at_angle(x, torch.rand(rows, dtype=torch.float64) * 2.9 + 0.1),
        "u": tangent(x, 1.5 / d**0.5),
        "v": torch.randn(rows, d, dtype=torch.float64),
        "t": torch.rand(rows, 1, dtype=torch.float64),
    }


CALLS = {
    "normalize": lambda i: sphere_ops.normalize(i["v"]),
    "proju": lambda i: sphere_ops.proju(i["x"], i["v"]),
    "dist": lambda i: sphere_ops.dist(i["x"], i["y"]),
    "expmap": lambda i: sphere_ops.expmap(i["x"], i["u"]),
    "logmap": lambda i: sphere_ops.logmap(i["x"], i["y"]),
    "geodesic": lambda i: sphere_ops.geodesic(i["x"], i["y"], i["t"]),
    "geodesic_velocity": lambda i: sphere_ops.geodesic_velocity(i["x"], i["y"], i["t"]),
    "transp": lambda i: sphere_ops.transp(i["x"], i["y"], i["v"]),
}


def _run(op: str, inputs: dict[str, torch.Tensor]) -> tuple[list, list]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = CALLS[op](leaves)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator(device="cpu").manual_seed(1)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outs]
    torch.autograd.backward(outs, grads)
    return [o.detach().cpu() for o in outs], [leaves[k].grad.cpu() for k in leaves if leaves[k].grad is not None]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [7, 64, 768, 1100])
@pytest.mark.parametrize("op", sorted(SPECS))
def test_cuda_backend_matches_reference(backend: str, dtype: torch.dtype, d: int, op: str) -> None:
    inputs = _inputs(d, dtype)
    low = {k: (v.to(dtype) if k != "t" else v.to(R.compute_dtype(dtype))) for k, v in inputs.items()}
    with sphere_ops.backend("torch"):
        ref_out, ref_grad = _run(op, {k: v.double() for k, v in low.items()})
    with sphere_ops.backend(backend):
        out, grad = _run(op, {k: v.cuda() for k, v in low.items()})
    tol = tolerance(dtype) if dtype != torch.float64 else 1e-10
    for o, r in zip(out, ref_out):
        assert o.dtype == dtype and max_rel(o, r) <= tol, f"{op} output"
    for g, r in zip(grad, ref_grad):
        assert max_rel(g, r) <= 2 * tol, f"{op} gradient"


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_cuda_accuracy_contract(backend: str) -> None:
    angles = [1e-4, 1e-3, 1e-2, 1.0, 3.0, 3.1415926 - 1e-3]
    x = unit(len(angles) * 64, 768)
    y = at_angle(x, torch.tensor(angles, dtype=torch.float64).repeat_interleave(64))
    x32, y32 = x.float(), y.float()
    truth = R.dist(x32.double(), y32.double())
    with sphere_ops.backend(backend):
        got = sphere_ops.dist(x32.cuda(), y32.cuda()).double().cpu()
        xt = sphere_ops.geodesic(x32.cuda(), y32.cuda(), 0.37).double().cpu()
        same = sphere_ops.dist(x32.cuda(), x32.cuda())
    assert ((got - truth).abs() / truth).max() <= 1e-6
    assert (xt.norm(dim=-1) - 1).abs().max() <= 4e-7
    assert (same == 0).all()


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_ops_never_synchronize_the_device(backend: str) -> None:
    x = sphere_ops.random_uniform((64, 256), 768, device="cuda").requires_grad_(True)
    y = sphere_ops.random_uniform((64, 256), 768, device="cuda")
    t = torch.rand(64, 1, 1, device="cuda")
    with sphere_ops.backend(backend):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            xt, ut = sphere_ops.geodesic_velocity(x, y, t)
            loss = (ut * xt).sum() + sphere_ops.dist(x, y).sum() + sphere_ops.geodesic(x, y, 0.5).sum()
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_cuda_opcheck_and_streams(backend: str) -> None:
    x = unit(3, 5, 768, dtype=torch.float32).cuda().requires_grad_(True)
    y = at_angle(x.detach().cpu(), 1.0).float().cuda().requires_grad_(True)
    t = torch.rand(3, 5, 1, device="cuda", requires_grad=True)
    with sphere_ops.backend(backend):
        torch.library.opcheck(torch.ops.sphere_ops.geodesic_velocity, (x, y, t))
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            on_side = sphere_ops.logmap(x.detach(), y.detach())
        side.synchronize()
        torch.testing.assert_close(on_side, sphere_ops.logmap(x.detach(), y.detach()))
