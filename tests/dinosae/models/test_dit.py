"""The DiT: shapes, adaLN-Zero, tangent outputs, every flag combination, presets, torch.compile."""

import itertools
import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

import sphere_ops
from dinosae import create_model
from dinosae.config import DIT_PRESETS, LIGHTNING_FLAGS, DiTConfig
from dinosae.flow import flow_matching_loss
from dinosae.models.dit import DiT, LabelEmbedder, RotaryEmbedding2D

from helpers import max_rel

D, GRID, CLASSES = 16, 4, 10
SMALL = dict(hidden_size=32, depth=2, num_heads=2, in_dim=D, grid_size=GRID, num_classes=CLASSES)
FLAGS = [
    dict(norm=norm, mlp=mlp, rope=rope, qk_norm=qk_norm)
    for norm, mlp, rope, qk_norm in itertools.product(("layernorm", "rmsnorm"), ("gelu", "swiglu"), *[(False, True)] * 2)
]


def inputs(batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = sphere_ops.random_uniform((batch, GRID * GRID), D, generator=g, dtype=dtype)
    t = torch.rand(batch, generator=g, dtype=dtype)
    y = torch.randint(CLASSES + 1, (batch,), generator=g)  # the null class included
    return x, t, y


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every parameter, the zero-initialized ones included, so that outputs are generic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_every_flag_combination_starts_at_zero_then_gives_tangent_velocities(flags: dict) -> None:
    model = DiT(DiTConfig(**SMALL, **flags))
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero: every block is the identity, the output 0

    randomize(model)
    out = model(x, t, y)
    assert out.abs().max() > 1e-2
    assert ((out * x).sum(-1).abs() <= 1e-5 * out.norm(dim=-1).clamp_min(1)).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("flags", [{}, dict(qk_norm=True), LIGHTNING_FLAGS], ids=["plain", "qk_norm", "lightning"])
def test_bf16_autocast_runs_and_returns_the_input_dtype(flags: dict) -> None:
    model = randomize(DiT(DiTConfig(**SMALL, **flags))).eval()
    x, t, y = inputs()
    with warnings.catch_warnings(record=True) as caught, torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("always")
        out = model(x, t, y)
        out.square().sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert ((out * x).sum(-1).abs() <= 1e-5 * out.norm(dim=-1).clamp_min(1)).all()  # projected in float32
    assert not [w for w in caught if "dtype" in str(w.message)]  # no mixed-dtype fallbacks
    torch.testing.assert_close(out, model(x, t, y), rtol=0.1, atol=0.05 * out.abs().max().item())


def test_a_fresh_model_has_gradients_only_where_adaln_zero_lets_them_through() -> None:
    """With zero gates and a zero output layer, only the output layer learns at the first step (as in DiT)."""
    model = DiT(DiTConfig(**SMALL))
    x, t, y = inputs()
    model(x, t, y).sum().backward()  # sum of a tangent field is not 0, so the output layer gets a gradient
    assert model.final_layer.linear.weight.grad.abs().max() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().max() == 0


def raw_network(model: DiT) -> DiT:
    """The same weights with no geometry: the network's own input and output (R^D at scale 1)."""
    raw = DiT(DiTConfig(**SMALL, manifold="euclidean", radius=1.0)).eval()
    raw.load_state_dict(model.state_dict())
    return raw


def test_sphere_model_is_the_projected_network_on_scaled_input() -> None:
    """manifold='sphere': input times sqrt(D), output divided by it and projected onto the tangent space at x."""
    sphere = randomize(DiT(DiTConfig(**SMALL, manifold="sphere"))).eval()
    euclidean = DiT(DiTConfig(**SMALL, manifold="euclidean")).eval()
    euclidean.load_state_dict(sphere.state_dict())
    x, t, y = inputs()
    expected = sphere_ops.proju(x, raw_network(sphere)(math.sqrt(D) * x, t, y) / math.sqrt(D))
    torch.testing.assert_close(sphere(x, t, y), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sphere(x, t, y), sphere_ops.proju(x, euclidean(x, t, y)), rtol=1e-5, atol=1e-6)
    assert (euclidean(x, t, y) * x).sum(-1).abs().max() > 1e-3  # the Euclidean output is not projected


def test_one_radius_feeds_radius_r_points_and_reads_radius_r_velocities() -> None:
    """radius R: the network sees R x and predicts R-sphere velocities, returned divided by R;
    project_output=False: the radial part is left in (the loss penalizes it)."""
    radius = 7.5
    hae = randomize(DiT(DiTConfig(**SMALL, radius=radius, project_output=False))).eval()
    x, t, y = inputs()
    torch.testing.assert_close(hae(x, t, y), raw_network(hae)(radius * x, t, y) / radius, rtol=1e-5, atol=1e-6)
    assert (hae(x, t, y) * x).sum(-1).abs().max() > 1e-3


@pytest.mark.parametrize("manifold", ["sphere", "euclidean"])
def test_an_endpoint_model_returns_the_point_it_sees_plus_its_output(manifold: str) -> None:
    """prediction='x1': the endpoint is x + network(R x) / R, put on the manifold; at initialization it is x."""
    x, t, y = inputs()
    fresh = DiT(DiTConfig(**SMALL, manifold=manifold, prediction="x1")).eval()
    torch.testing.assert_close(fresh(x, t, y), x, rtol=0, atol=1e-6)
    model = randomize(fresh)
    moved = x + raw_network(model)(math.sqrt(D) * x, t, y) / math.sqrt(D)
    expected = sphere_ops.normalize(moved) if manifold == "sphere" else moved
    torch.testing.assert_close(model(x, t, y), expected, rtol=1e-5, atol=1e-6)


def test_outputs_depend_on_time_label_and_every_token() -> None:
    model = randomize(DiT(DiTConfig(**SMALL, class_dropout_prob=0.0))).eval()
    x, t, y = inputs()
    base = model(x, t, y)
    assert not torch.allclose(model(x, 1 - t, y), base)
    assert not torch.allclose(model(x, t, (y + 1) % CLASSES), base)
    x2 = x.clone()
    x2[:, -1] = sphere_ops.random_uniform((3,), D)
    assert not torch.allclose(model(x2, t, y)[:, 0], base[:, 0])  # attention mixes tokens


def test_float64_and_scalar_time() -> None:
    model = randomize(DiT(DiTConfig(**SMALL))).double().eval()
    x, _, y = inputs(dtype=torch.float64)
    out = model(x, torch.tensor(0.5, dtype=torch.float64), y)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, model(x, torch.full((3,), 0.5, dtype=torch.float64), y))


def test_time_embedding_is_finite_at_the_ends() -> None:
    model = randomize(DiT(DiTConfig(**SMALL)))
    x, _, y = inputs()
    for t in (0.0, 1.0):
        assert torch.isfinite(model(x, torch.full((3,), t), y)).all()


def test_label_dropout_draws_the_null_class_from_the_generator_only() -> None:
    embedder = LabelEmbedder(CLASSES, 8, dropout_prob=0.5)
    labels = torch.zeros(4000, dtype=torch.long)
    dropped = embedder.drop(labels, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, CLASSES}
    assert 0.45 < (dropped == CLASSES).float().mean().item() < 0.55
    torch.manual_seed(123)
    again = embedder.drop(labels, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)  # the global RNG plays no part
    null = embedder.embedding_table.weight[CLASSES]
    assert not (embedder(labels) == null).all(-1).any()  # the embedding itself never drops, even in training
    assert torch.equal(LabelEmbedder(CLASSES, 8, dropout_prob=0.0).drop(labels), labels)


def test_rope_scores_depend_on_relative_position_only() -> None:
    """<R_i q, R_j k> is a function of the grid offset between tokens i and j."""
    rope = RotaryEmbedding2D(head_dim=8, grid_size=GRID)
    q, k = torch.randn(8).expand(1, 1, GRID * GRID, 8), torch.randn(8).expand(1, 1, GRID * GRID, 8)
    scores = (rope(q)[0, 0] @ rope(k)[0, 0].T).double()
    pos = torch.stack(torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij"), -1).reshape(-1, 2)
    by_offset: dict[tuple[int, int], float] = {}
    for i, j in itertools.product(range(GRID * GRID), repeat=2):
        offset = tuple((pos[i] - pos[j]).tolist())
        by_offset.setdefault(offset, scores[i, j].item())
        assert abs(scores[i, j].item() - by_offset[offset]) < 1e-4
    assert len(set(round(v, 3) for v in by_offset.values())) > 10  # and it does depend on the offset


def test_presets_have_dit_sizes() -> None:
    """DiT's published counts (S 33M, B 130M, L 458M, XL 675M) hold with D=768 tokens and patch size 1."""
    published = {"S": 33e6, "B": 130e6, "L": 458e6, "XL": 675e6}
    with torch.device("meta"):
        counts = {name: count(create_model(f"dit-{name}")) for name in published}
        lightning_xl = count(create_model("dit-XL", **LIGHTNING_FLAGS))
    for name, n in published.items():
        assert abs(counts[name] / n - 1) < 0.015, (name, counts[name])
    assert abs(lightning_xl / counts["XL"] - 1) < 0.001  # SwiGLU at 2/3 width keeps the size
    assert counts["XL"] == 676_549_632  # in_dim 768, 1000 classes + null
    assert count(create_model("dit-tiny")) < 2e6
    assert [DIT_PRESETS[n].depth for n in ("S", "B", "L", "XL")] == [12, 12, 24, 28]


def test_bad_configs_and_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'dit-XXL'"):
        create_model("dit-XXL")
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        create_model("dit-tiny", hidden=3)
    with pytest.raises(ValueError, match="norm must be one of"):
        DiTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        DiTConfig(hidden_size=130, num_heads=4)
    with pytest.raises(ValueError, match="RoPE needs a head dim"):
        DiTConfig(hidden_size=24, num_heads=4, rope=True)
    with pytest.raises(ValueError, match="unknown manifold 'torus'; choose one of sphere, euclidean"):
        DiT(DiTConfig(**SMALL, manifold="torus"))  # the flow's name, checked where the flow is built
    model = DiT(DiTConfig(**SMALL))
    x, t, y = inputs()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 16, 16\)"):
        model(x[:, :9], t, y)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[..., :8], t, y)
    with pytest.raises(ValueError, match="t must be a floating tensor"):
        model(x, t[:2], y)
    with pytest.raises(ValueError, match="t must be a floating tensor"):
        model(x, 0.5, y)
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        model(x, t, y.float())


def test_no_graph_breaks_through_the_sphere_ops() -> None:
    """The model (proju at its end) and the flow-matching loss on the sphere (random_uniform, geodesic_velocity)
    trace as one graph each.

    An explicit torch.Generator is not traceable by dynamo, so the loss is traced with the global RNG.
    """
    model = DiT(DiTConfig(**SMALL, **LIGHTNING_FLAGS))
    x, t, y = inputs()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x, t, y)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    assert any("sphere_ops.proju" in str(op) for ops in explained.ops_per_graph for op in ops)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(flow_matching_loss)(model, model.manifold, x, y[:3] % CLASSES)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()


def _training_step(model: nn.Module, run: nn.Module) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    x, _, y = inputs(batch=4, seed=1)
    loss, _ = flow_matching_loss(run, model.manifold, x, y % CLASSES, generator=torch.Generator().manual_seed(2))
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("preset_flags", [{}, LIGHTNING_FLAGS], ids=["dit", "lightning"])
def test_block_checkpointing_gives_the_same_gradients_bit_for_bit(preset_flags: dict) -> None:
    """``checkpointing`` recomputes each block in the backward pass: the same loss and gradients, bit for bit
    (float32, the tiny preset with its adaLN gates randomized), from far fewer bytes kept for the backward."""
    config = replace(DIT_PRESETS["tiny"], **preset_flags, in_dim=D, grid_size=GRID, num_classes=CLASSES)
    model = randomize(DiT(config), seed=4)
    runs = []
    for checkpointing in (False, True):
        model.checkpointing = checkpointing
        kept = []

        def pack(tensor):
            kept.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss, grads = _training_step(model, model)
        runs.append((loss, grads, sum(kept)))
    (loss, grads, kept), (loss_ckpt, grads_ckpt, kept_ckpt) = runs
    assert loss == loss_ckpt
    for name, (a, b) in zip([n for n, _ in model.named_parameters()], zip(grads, grads_ckpt)):
        assert torch.equal(a, b), name
    assert model.blocks[0].attn.qkv.weight.grad.abs().max() > 0  # gradients do flow through the blocks
    assert kept_ckpt < 0.5 * kept, (kept_ckpt, kept)


def _check_compiled_step(backend: str) -> None:
    model = randomize(DiT(DiTConfig(**SMALL, **LIGHTNING_FLAGS, class_dropout_prob=0.0)), seed=3)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    loss_compiled, grads_compiled = _training_step(model, compiled)
    loss_eager, grads_eager = _training_step(model, model)
    assert math.isclose(loss_compiled, loss_eager, rel_tol=1e-5)
    # inductor reorders float32 sums (fused kernels): compare each gradient relative to its own size
    assert max(max_rel(a, b) for a, b in zip(grads_compiled, grads_eager)) < 1e-3
    torch._dynamo.reset()


def test_compiled_training_step_matches_eager() -> None:
    """Dynamo + AOTAutograd through the sphere ops' fake and autograd registrations (no codegen: fast)."""
    _check_compiled_step("aot_eager")


@pytest.mark.slow
def test_inductor_training_step_matches_eager() -> None:
    """The default backend, with C++ code generation (about a minute on 2 cores without a warm cache)."""
    _check_compiled_step("inductor")
