"""The DiT's configuration and its named sizes (DiT's S/B/L/XL, and a CPU size)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dinosae.config.base import check_fields, check_range

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes and options of a :class:`DiT`.

    ``in_dim`` is the latent channel D and ``grid_size`` the side of the token
    grid (16 for 256 px images, so N = 256 tokens).

    ``manifold`` is the space the flow runs in (the product of spheres, or R^D
    for the Euclidean baseline) and ``prediction`` what the network predicts:
    the velocity at x_t, or the endpoint x1; their names are the flow's
    (``dinosae.flow.names``), checked where the DiT is built. ``radius`` is
    the one scale of the geometry: the network sees a point at ``radius``
    times its data-unit value (on the sphere: the sphere of radius R it
    works on) and predicts velocities of that size; None is sqrt(D), which
    gives unit tokens unit-variance coordinates (the HAE paper's R is the same
    up to 1e-3). ``project_output`` makes a velocity tangent by construction;
    HAE leaves it free and penalizes its radial part in the loss instead.

    Example:
        >>> DiTConfig(hidden_size=64, depth=2, num_heads=2, in_dim=16, grid_size=4).num_tokens
        16
    """

    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    in_dim: int = 768
    grid_size: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    norm: str = "layernorm"
    mlp: str = "gelu"
    rope: bool = False
    qk_norm: bool = False
    manifold: str = "sphere"
    prediction: str = "velocity"
    radius: float | None = None
    project_output: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        check_range(self, 1, 1 << 16, "hidden_size", "num_heads", "in_dim")
        check_range(self, 1, 1024, "depth", "grid_size")
        check_range(self, 1, 10_000_000, "num_classes")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        # the sin-cos table splits channels into 2 axes x (sin, cos); RoPE splits each head into 2 axes x pairs
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 for 2-D position embeddings, got {self.hidden_size}")
        if self.rope and self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head dim that is a multiple of 4, got {self.head_dim}")
        if self.manifold == "sphere" and self.in_dim < 2:
            raise ValueError(f"in_dim must be >= 2 for tokens on S^(D-1), got {self.in_dim}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not (self.radius is None or 0 < self.radius < math.inf):
            raise ValueError(f"radius must be a finite number > 0 (or None: sqrt(in_dim)), got {self.radius}")
        for name, options in (("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2


# ---------------------------------------------------------------- named sizes

# DiT's named sizes (Peebles & Xie, Table 1) and a CPU size for tests and demos.
DIT_PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(hidden_size=128, depth=4, num_heads=4),
    "S": DiTConfig(hidden_size=384, depth=12, num_heads=6),
    "B": DiTConfig(hidden_size=768, depth=12, num_heads=12),
    "L": DiTConfig(hidden_size=1024, depth=24, num_heads=16),
    "XL": DiTConfig(hidden_size=1152, depth=28, num_heads=16),
}

# LightningDiT's architecture changes, to pass to create_model("dit-...") as overrides.
LIGHTNING_FLAGS: dict[str, object] = {"norm": "rmsnorm", "mlp": "swiglu", "rope": True, "qk_norm": True}
