"""geoopt manifolds built on the fused sphere ops.

:class:`ProductSphere` lets geoopt's Riemannian optimizers (``RiemannianAdam``,
``RiemannianSGD``) and ``ManifoldParameter`` / ``ManifoldTensor`` run on the
fused kernels of :mod:`sphere_ops`, with exact exponential maps as retractions
and exact parallel transport.
"""

from __future__ import annotations

import math

import geoopt
import torch
from geoopt.utils import size2shape
from torch import Tensor

from . import ops
from .random import random_uniform

__all__ = ["ProductSphere"]


class ProductSphere(geoopt.Manifold):
    """A product of unit spheres: every row ``(..., D)`` of a point has norm 1.

    The last ``ndim`` dims of a tensor form one point: ``ndim=1`` is a single
    sphere S^(D-1) (a point is ``(D,)``), ``ndim=2`` the product of N spheres
    (a point is ``(N, D)``, such as the N tokens of one latent), and so on. Dims
    before those index a batch of points. The metric is the product metric:
    inner products and squared distances add up over the rows of a point.

    ``retr`` is the exact exponential map and ``transp`` exact parallel
    transport (along the shortest arc from ``x`` to ``y``, which is the path of
    a step ``expmap(x, u)`` while every row of ``u`` is shorter than pi).
    Two-tensor maps broadcast their arguments against each other.

    Args:
        ndim: how many trailing dims form one point (at least 1).

    Example:
        >>> import geoopt, torch
        >>> from sphere_ops.manifolds import ProductSphere
        >>> sphere = ProductSphere(ndim=2)
        >>> z = geoopt.ManifoldParameter(sphere.random(4, 16, 8), manifold=sphere)
        >>> opt = geoopt.optim.RiemannianAdam([z], lr=1e-2, stabilize=10)
        >>> (-z[..., 0].sum()).backward()
        >>> opt.step()
        >>> sphere.check_point_on_manifold(z)
        True
        >>> sphere.dist(z, sphere.origin(4, 16, 8)).shape
        torch.Size([4])
    """

    name = "ProductSphere"
    reversible = False

    def __init__(self, ndim: int = 1) -> None:
        super().__init__()
        if isinstance(ndim, bool) or not isinstance(ndim, int) or ndim < 1:
            raise ValueError(f"ndim must be an int >= 1 (the dims that form one point), got {ndim!r}")
        self.ndim = ndim

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}"

    @property
    def _dims(self) -> tuple[int, ...]:
        return tuple(range(-self.ndim, 0))

    def _over_points(self, x: Tensor, value: Tensor, reduced: int, keepdim: bool) -> Tensor:
        """``value``, already reduced over the last ``reduced`` dims, expanded to one entry per point of ``x``.

        A vector that broadcasts against ``x`` still yields one value per point of ``x``.
        """
        batch = x.shape[:-reduced] + (1,) * reduced if keepdim else x.shape[:-reduced]
        return value.expand(torch.broadcast_shapes(batch, value.shape))

    # ------------------------------------------------------------ checks

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        if len(shape) < self.ndim:
            return False, (
                f"`{name}` of shape {tuple(shape)} has fewer than the {self.ndim} dims of a point on {self}"
            )
        if shape[-1] < 2:
            return False, f"`{name}` has rows of size {shape[-1]}; points on S^(D-1) need D >= 2"
        return True, None

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        err = (torch.linalg.vector_norm(x.double(), dim=-1) - 1).abs()
        return _verdict(err, atol + rtol, "x", "| |x| - 1 |", "is off the unit sphere")

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        x, u = torch.broadcast_tensors(x.double(), u.double())
        # The normal part <x, u> is judged against the size of u: a long vector
        # carries proportionally more rounding in its normal component.
        err = (x * u).sum(-1).abs()
        tol = atol + rtol * torch.linalg.vector_norm(u, dim=-1)
        return _verdict(err, tol, "u", "|<x, u>|", "is not tangent at the matching row of x")

    # ------------------------------------------------------------ metric

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        """The product-metric inner product of tangent vectors, one value per point."""
        if v is None:
            v = u
        return self._over_points(x, (u * v).sum(dim=self._dims, keepdim=keepdim), self.ndim, keepdim)

    def component_inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = True
    ) -> Tensor:
        """``<u, v>`` on each sphere row: shape ``x.shape[:-1]`` (plus a trailing 1 with ``keepdim``).

        ``keepdim`` defaults to True because Riemannian Adam adds the result to
        a state of the point's shape, so every row gets its own second moment.
        """
        if v is None:
            v = u
        return self._over_points(x, (u * v).sum(dim=-1, keepdim=keepdim), 1, keepdim)

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False) -> Tensor:
        """The product-metric norm of a tangent vector, one value per point."""
        # vector_norm rather than sqrt(inner): no overflow, and a zero gradient at u == 0.
        norm = torch.linalg.vector_norm(u, dim=self._dims, keepdim=keepdim)
        return self._over_points(x, norm, self.ndim, keepdim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Geodesic distance of the product: the root sum of squared row angles, one value per point."""
        rows = ops.dist(*torch.broadcast_tensors(x, y)).unsqueeze(-1)
        # vector_norm has a zero gradient where x == y, where sqrt(sum of squares) has none.
        return torch.linalg.vector_norm(rows, dim=self._dims, keepdim=keepdim)

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """The squared product distance: the sum of squared row angles."""
        rows = ops.dist(*torch.broadcast_tensors(x, y)).unsqueeze(-1)
        return rows.square().sum(dim=self._dims, keepdim=keepdim)

    # ------------------------------------------------------------ maps

    def projx(self, x: Tensor) -> Tensor:
        """Normalize every row onto its sphere."""
        return ops.normalize(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project ``u`` onto the tangent space at ``x``, row by row."""
        return ops.proju(*torch.broadcast_tensors(x, u))

    egrad2rgrad = proju

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Follow the geodesic of every row from ``x`` with initial velocity ``u``."""
        return ops.expmap(*torch.broadcast_tensors(x, u))

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """The tangent vector at ``x`` whose exponential map reaches ``y``, row by row."""
        return ops.logmap(*torch.broadcast_tensors(x, y))

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Parallel transport of ``v`` from ``x`` to ``y``; keeps norms and inner products."""
        return ops.transp(*torch.broadcast_tensors(x, y, v))

    # ------------------------------------------------------------ sampling

    def random_uniform(
        self,
        *size: int | tuple[int, ...],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> geoopt.ManifoldTensor:
        """Points uniform on every sphere row, as a ``ManifoldTensor`` of shape ``size``."""
        shape = size2shape(*size)
        self._assert_check_shape(shape, "x")
        points = random_uniform(shape[:-1], shape[-1], generator=generator, dtype=dtype, device=device)
        return geoopt.ManifoldTensor(points, manifold=self)

    random = random_uniform

    def origin(
        self,
        *size: int | tuple[int, ...],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = 42,
    ) -> geoopt.ManifoldTensor:
        """A fixed point of shape ``size``: uniform rows drawn from a generator seeded with ``seed``.

        Spheres have no distinguished point, so, as in geoopt, the origin is a
        seeded sample; its own generator leaves the global RNG untouched.
        ``seed=None`` draws from the global RNG instead.
        """
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)
        return self.random_uniform(*size, dtype=dtype, device=device, generator=generator)


def _verdict(
    err: Tensor, tol: Tensor | float, name: str, measure: str, problem: str
) -> tuple[bool, str | None]:
    """Pass when every row's ``err`` is within ``tol``; else name the row that misses it most.

    NaN errors count as the worst, so a row of NaNs is always the one named.
    """
    excess = (err - tol).nan_to_num(nan=math.inf)
    if excess.numel() == 0:
        return True, None
    worst = excess.argmax()
    if excess.reshape(-1)[worst] <= 0:
        return True, None
    index = tuple(int(i) for i in torch.unravel_index(worst, excess.shape))
    row = f"{name}[{', '.join(map(str, index))}]" if index else name
    worst_tol = torch.as_tensor(tol).expand_as(err)[index].item()
    failing = int((excess > 0).sum())
    return False, (
        f"row {row} {problem}: {measure} = {err[index].item():.3g} > tolerance {worst_tol:.3g}"
        f" ({failing} of {excess.numel()} rows fail)"
    )
