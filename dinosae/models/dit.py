"""A Diffusion Transformer (DiT) on a grid of latent tokens, with LightningDiT options.

The model follows Peebles & Xie's DiT: sinusoidal timestep embedding, a class
embedding with a null class (for classifier-free guidance), blocks with
adaLN-Zero conditioning, and a final adaLN layer. The latent grid is already
tokenized, so the "patch embedding" is a linear map of each token (patch size 1).
LightningDiT's changes are flags: RMSNorm, SwiGLU, 2-D rotary position embedding
in place of the fixed sin-cos table, and per-head normalization of queries and keys.

The geometry is the model's :class:`dinosae.flow.manifolds.Manifold` (``model.manifold``,
built from ``manifold`` and ``radius``): the network sees ``x_t`` at the
manifold's scale (unit tokens times sqrt(D) by default, so that coordinates have
unit variance) and its output goes back through ``manifold.from_model``: a
velocity projected onto the tangent space at ``x_t`` (on the sphere, with
``project_output``), or an endpoint put on the manifold (``prediction="x1"``).

Classifier-free guidance is done by the solver (``dinosae.flow.solvers``), which
batches the conditional and the null-class inputs: the model only needs to know
its null class, ``model.num_classes``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import sphere_ops
from dinosae.flow.manifolds import make_manifold
from dinosae.flow.names import PREDICTIONS, check_name
from dinosae.config.dit import DiTConfig
from dinosae.models.hub import PretrainedMixin
from dinosae.models.record import ModelRecord, check_fits, load_record_weights

__all__ = ["DiT"]


# ---------------------------------------------------------------- embedding layers


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with one (shift, scale) per sample, over the tokens of x (B, N, C).

    Example:
        >>> modulate(torch.ones(1, 2, 3), torch.zeros(1, 3), torch.ones(1, 3))[0, 0]
        tensor([2., 2., 2.])
    """
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def make_norm(kind: str, dim: int, affine: bool) -> nn.Module:
    """LayerNorm or RMSNorm over the last dim, eps 1e-6 as in DiT.

    Example:
        >>> make_norm("rmsnorm", 8, affine=False)(torch.randn(2, 8)).pow(2).mean(-1).round(decimals=3)
        tensor([1., 1.])
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
    return nn.RMSNorm(dim, elementwise_affine=affine, eps=1e-6)


class TimestepEmbedder(nn.Module):
    """Embeds times t in [0, 1] (B,) into vectors (B, hidden_size): sinusoids, then an MLP.

    Example:
        >>> TimestepEmbedder(32)(torch.rand(4)).shape
        torch.Size([4, 32])
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        """Sinusoids of t (B,) at geometrically spaced frequencies: (B, dim), cos half then sin half."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        # The frequencies (periods 2 pi .. 2 pi 10^4) were laid out for DiT's integer steps in [0, 1000];
        # scaling t keeps that resolution over [0, 1].
        args = 1000 * t.float()[:, None] * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: Tensor) -> Tensor:
        embedding = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels (B,) to vectors (B, hidden_size), with a null class ``num_classes``.

    Classifier-free guidance trains one model for the conditional and the
    unconditional velocity by replacing labels with the null class with
    probability ``dropout_prob`` (:meth:`drop`). The trainer calls it with its
    per-step generator, so that a resumed run drops the same labels; the
    embedding itself is deterministic.

    Example:
        >>> embedder = LabelEmbedder(10, 32, 0.5)
        >>> embedder(torch.tensor([1, 10])).shape
        torch.Size([2, 32])
        >>> embedder.drop(torch.arange(6), torch.Generator().manual_seed(0)).tolist()
        [10, 1, 10, 10, 10, 5]
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def drop(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``labels`` with each replaced by the null class with probability ``dropout_prob``."""
        if self.dropout_prob <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.dropout_prob
        return torch.where(drop, self.num_classes, labels)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (grid_size^2, dim), row-major: half the channels per axis.

    Example:
        >>> sincos_pos_embed_2d(8, 4).shape
        torch.Size([16, 8])
    """
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    parts = []
    for pos in (rows.flatten(), cols.flatten()):
        angles = pos.double()[:, None] * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


class RotaryEmbedding2D(nn.Module):
    """2-D rotary position embedding: a head's channel pairs turn by angles of the token's row and column.

    The first half of the pairs turn with the row index, the second half with
    the column index, at geometrically spaced frequencies. Input (B, H, N, head_dim)
    with N = grid_size^2 in row-major order.

    Example:
        >>> rope = RotaryEmbedding2D(head_dim=8, grid_size=4)
        >>> q = torch.randn(2, 3, 16, 8)
        >>> torch.allclose(rope(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
        True
    """

    def __init__(self, head_dim: int, grid_size: int, theta: float = 10000.0) -> None:
        super().__init__()
        quarter = head_dim // 4
        freqs = theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
        angles = torch.cat([rows.flatten()[:, None] * freqs, cols.flatten()[:, None] * freqs], dim=1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        turned = torch.stack([a * self.cos - b * self.sin, a * self.sin + b * self.cos], dim=-1)
        return turned.flatten(-2).type_as(x)


# ---------------------------------------------------------------- transformer layers


class Attention(nn.Module):
    """Multi-head self-attention (fused SDPA), optionally with QK-norm and 2-D RoPE.

    Example:
        >>> Attention(32, 4, qk_norm=True, norm="rmsnorm")(torch.randn(2, 16, 32)).shape
        torch.Size([2, 16, 32])
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm: str = "layernorm") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        head_dim = dim // num_heads
        self.q_norm = make_norm(norm, head_dim, affine=True) if qk_norm else None
        self.k_norm = make_norm(norm, head_dim, affine=True) if qk_norm else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: RotaryEmbedding2D | None = None) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            # in float32: under autocast q and k are bf16 while the norms' weights stay float32
            q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        if rope is not None:
            q, k = rope(q), rope(k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """Two-layer MLP with tanh-GELU, as in DiT.

    Example:
        >>> Mlp(32, 128)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """Gated MLP ``W3 (silu(W1 x) * W2 x)``; ``hidden`` is the width of the gate.

    Example:
        >>> SwiGLU(32, 88)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def make_mlp(kind: str, dim: int, mlp_ratio: float) -> nn.Module:
    """GELU MLP of width ``mlp_ratio * dim``, or SwiGLU of width 2/3 of that (the same parameter count).

    The SwiGLU width is rounded up to a multiple of 8 for efficient matmuls.

    Example:
        >>> make_mlp("gelu", 96, 4.0).fc1.out_features, make_mlp("swiglu", 96, 4.0).w3.in_features
        (384, 256)
    """
    hidden = int(dim * mlp_ratio)
    if kind == "gelu":
        return Mlp(dim, hidden)
    return SwiGLU(dim, (2 * hidden // 3 + 7) // 8 * 8)


class DiTBlock(nn.Module):
    """A transformer block whose norms are modulated by the conditioning (adaLN-Zero).

    The conditioning gives a shift, a scale and a gate for the attention and
    for the MLP; gates start at zero, so a fresh block is the identity.

    Example:
        >>> block = DiTBlock(32, 4)
        >>> x = torch.randn(2, 16, 32)
        >>> torch.equal(block(x, torch.randn(2, 32)), x)
        True
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm: str = "layernorm",
        mlp: str = "gelu",
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads, qk_norm=qk_norm, norm=norm)
        self.norm2 = make_norm(norm, hidden_size, affine=False)
        self.mlp = make_mlp(mlp, hidden_size, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x: Tensor, c: Tensor, rope: RotaryEmbedding2D | None = None) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map from the hidden size back to the token dim; zero at init.

    Example:
        >>> FinalLayer(32, 16)(torch.randn(2, 4, 32), torch.randn(2, 32)).abs().max()
        tensor(0., grad_fn=<MaxBackward1>)
    """

    def __init__(self, hidden_size: int, out_dim: int, norm: str = "layernorm") -> None:
        super().__init__()
        self.norm_final = make_norm(norm, hidden_size, affine=False)
        self.linear = nn.Linear(hidden_size, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        for layer in (self.linear, self.adaLN_modulation[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---------------------------------------------------------------- the model


class DiT(PretrainedMixin, nn.Module):
    """A class-conditional velocity field ``v(x_t, t, y)`` on a (grid_size^2, in_dim) token grid.

    ``forward(x, t, y)``: tokens x (B, N, D), times t in [0, 1] (B,) (t = 0 noise,
    t = 1 data), labels y (B,) in ``[0, num_classes]`` where ``num_classes`` is
    the null class. Returns its prediction (B, N, D) in x's dtype and data units: a velocity, tangent at x
    when ``manifold="sphere"`` and ``project_output``, or the endpoint x1 (``prediction="x1"``). Built from a
    named size by ``dinosae.create_model("dit-XL", ...)``.

    With ``checkpointing`` on, training keeps only each block's input and
    recomputes the block in the backward pass: the blocks' activations are
    nearly all of a step's memory (``dinosae bench memory --kind dit``).

    Example:
        >>> model = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=2, in_dim=8, grid_size=2, num_classes=4))
        >>> x = sphere_ops.random_uniform((3, 4), 8)
        >>> model(x, torch.rand(3), torch.tensor([0, 1, 4])).abs().max()  # adaLN-Zero: 0 at init
        tensor(0., grad_fn=<MaxBackward1>)
    """

    pretrained_kind = "dit"

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.manifold = make_manifold(config.manifold, config.in_dim, config.radius)
        check_name("prediction", config.prediction, PREDICTIONS)
        self.checkpointing = False
        self.x_embedder = nn.Linear(config.in_dim, config.hidden_size)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.y_embedder = LabelEmbedder(config.num_classes, config.hidden_size, config.class_dropout_prob)
        if config.rope:
            self.rope = RotaryEmbedding2D(config.head_dim, config.grid_size)
        else:
            self.rope = None
            pos_embed = sincos_pos_embed_2d(config.hidden_size, config.grid_size)
            self.register_buffer("pos_embed", pos_embed, persistent=False)
        self.blocks = nn.ModuleList(
            DiTBlock(config.hidden_size, config.num_heads, config.mlp_ratio, config.norm, config.mlp, config.qk_norm)
            for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(config.hidden_size, config.in_dim, config.norm)
        self.initialize_weights()

    @property
    def num_classes(self) -> int:
        """The number of real classes, which is also the label of the null class."""
        return self.config.num_classes

    @classmethod
    def from_record(cls, record: ModelRecord, teacher_weights: None = None) -> DiT:
        """The DiT a file holds (``dinosae.models.record``), in the dtypes of its weights."""
        with torch.device("meta"):
            check_fits(cls(record.config), record.weights, record.source)
        model = cls(record.config)
        load_record_weights(model, record.weights, record.source)
        return model

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Labels for a training step: each replaced by the null class with ``class_dropout_prob``."""
        return self.y_embedder.drop(labels, generator)

    def initialize_weights(self) -> None:
        """DiT's initialization: Xavier-uniform linears, N(0, 0.02) embeddings; adaLN and output stay zero."""
        zero_init = {block.adaLN_modulation[-1] for block in self.blocks}
        zero_init |= {self.final_layer.linear, self.final_layer.adaLN_modulation[-1]}
        for module in self.modules():
            if isinstance(module, nn.Linear) and module not in zero_init:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self._check_inputs(x, t, y)
        config = self.config
        h = self.x_embedder(self.manifold.to_model(x))
        if self.rope is None:
            h = h + self.pos_embed
        c = self.t_embedder(t.expand(x.shape[0])) + self.y_embedder(y)
        recompute = self.checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            h = checkpoint(block, h, c, self.rope, use_reentrant=False) if recompute else block(h, c, self.rope)
        out = self.final_layer(h, c).to(x.dtype)  # bf16 under autocast; the projection takes x's dtype
        return self.manifold.from_model(x, out, config.prediction, project=config.project_output)

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor) -> None:
        config = self.config
        if x.dim() != 3 or x.shape[1:] != (config.num_tokens, config.in_dim):
            raise ValueError(
                f"x must have shape (B, {config.num_tokens}, {config.in_dim}) (a {config.grid_size}x{config.grid_size}"
                f" grid of {config.in_dim}-dim tokens), got {tuple(x.shape)}"
            )
        if not x.dtype.is_floating_point:
            raise ValueError(f"x must be a floating tensor, got {x.dtype}")
        if not isinstance(t, Tensor) or not t.dtype.is_floating_point or t.shape not in ((), (x.shape[0],)):
            raise ValueError(f"t must be a floating tensor of shape ({x.shape[0]},) or (), got {_describe(t)}")
        if not isinstance(y, Tensor) or y.dtype not in (torch.int32, torch.int64) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be an integer tensor of labels of shape ({x.shape[0]},), got {_describe(y)}")


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__
