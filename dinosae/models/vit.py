"""The frozen DINOv3 ViT: creation from a local weights file, and running it on a token grid.

The student and the teacher share one ViT; they differ only in what turns the
image into the NHWC token grid (the trainable stem or the ViT's own patch
embedding). ``run_on_grid`` is the ViT's ``forward_features`` with the patch
embedding taken out.
"""

from __future__ import annotations

import os
import warnings

import timm
import torch
from torch import nn

from dinosae.models.weights import read_weights

# DINOv3's preprocessing: images in [0, 1] are standardized with ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomTeacherWarning(UserWarning):
    """The ViT has random weights: alignment, probing and the GAN teacher carry no meaning."""


def create_vit(name: str, image_size: int, weights: str | os.PathLike | None = None,
               depth: int | None = None) -> nn.Module:
    """A frozen timm DINOv3 ViT in eval mode, with weights from a local file if given.

    ``weights`` is a ``.pth`` or ``.safetensors`` file in timm's key names or in
    Meta's original ones (see :func:`load_vit_state`). Without it the ViT is
    randomly initialized, and a ``RandomTeacherWarning`` says so: nothing is
    downloaded. ``depth`` keeps only the first blocks.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vit = create_vit("vit_tiny_patch16_dinov3_qkvb", image_size=64, depth=2)
        >>> vit.embed_dim, len(vit.blocks), any(p.requires_grad for p in vit.parameters())
        (192, 2, False)
    """
    overrides = {} if depth is None else {"depth": depth}
    vit = timm.create_model(name, pretrained=False, img_size=image_size, num_classes=0, **overrides)
    if not getattr(vit, "dynamic_img_size", False):
        raise ValueError(f"{name} does not take NHWC token grids (dynamic_img_size); use a timm DINOv3 ViT")
    if weights is not None:
        missing = load_vit_state(vit, read_weights(weights, "teacher weights"), source=str(weights),
                                 name=name)
        if missing:
            raise ValueError(f"teacher weights {str(weights)!r} lack {missing[:5]}")
    else:
        warnings.warn(f"no --teacher-weights given: {name} is randomly initialized, so the "
                      "teacher, the alignment loss and the discriminator features are not "
                      "DINOv3's and results are not meaningful", RandomTeacherWarning, stacklevel=2)
    vit.requires_grad_(False)
    return vit.eval()


def nonzero_qv_biases(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of Meta-named DINOv3 weights whose ``attn.qkv.bias`` is not all zero: q/v biases to keep.

    Example:
        >>> nonzero_qv_biases({"blocks.0.attn.qkv.bias": torch.ones(3), "blocks.1.attn.qkv.bias": torch.zeros(3)})
        ['blocks.0.attn.qkv.bias']
    """
    return [k for k, v in state.items() if k.endswith("attn.qkv.bias") and bool(v.abs().max() > 0)]


def load_vit_state(vit: nn.Module, state: dict[str, torch.Tensor], source: str, name: str = "the ViT") -> list[str]:
    """Load DINOv3 weights in timm's or Meta's key names into a timm ViT; returns the keys still missing.

    Meta's names go through timm's own converter, which drops a ``qkv.bias``
    the model has no parameter for: a ViT without q/v biases would silently
    compute other tokens, so non-zero ones are refused (take the ``_qkvb``
    variant). Blocks beyond the model's depth are dropped; any other unknown
    key is an error.
    """
    from timm.models.eva import checkpoint_filter_fn

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} does not hold a flat dict of tensors")
    if "storage_tokens" in state:
        has_qv_bias = any(k.endswith("q_bias") for k in vit.state_dict())
        biased = nonzero_qv_biases(state)
        if biased and not has_qv_bias:
            raise ValueError(f"{source} has non-zero q/v biases ({biased[0]}, ...), which {name} has no "
                             f"parameters for: use {name.removesuffix('_qkvb')}_qkvb")
        state = checkpoint_filter_fn(state, vit)
    depth = len(vit.blocks)
    state = {k: v for k, v in state.items() if not (k.startswith("blocks.") and int(k.split(".")[1]) >= depth)}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{source} has ViT keys {name} does not: {sorted(unexpected)[:5]}")
    return list(missing)


def pixel_input(images: torch.Tensor, convention: str) -> torch.Tensor:
    """What the stem sees of images in [0, 1]: ``"imagenet"`` (DINOv3's standardization), ``"signed"``
    (2x - 1) or ``"unit"`` (x as it is).

    Example:
        >>> pixel_input(torch.tensor([[[[0.0, 1.0]]]]).expand(1, 3, 1, 2), "signed")[0, 0]
        tensor([[-1.,  1.]])
    """
    if convention == "imagenet":
        return standardize(images)
    if convention == "signed":
        return images * 2.0 - 1.0
    if convention == "unit":
        return images
    raise ValueError(f"unknown pixel input convention {convention!r}")


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to the ViT's input statistics."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def run_on_grid(vit: nn.Module, grid: torch.Tensor, depths: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Patch tokens after the final norm for an NHWC grid, and the tokens after blocks ``depths``.

    Prefix tokens (class and registers) take part in attention as in DINOv3 and
    are dropped from the outputs: (B, H*W, D), and one (B, H*W, D) per depth.
    """
    if grid.dim() != 4:
        raise ValueError(f"expected an NHWC token grid (B, H, W, D), got shape {tuple(grid.shape)}")
    tokens, rope = vit._pos_embed(grid)
    tokens = vit.norm_pre(tokens)
    prefix = vit.num_prefix_tokens
    taps = []
    for depth, block in enumerate(vit.blocks):
        tokens = block(tokens, rope=rope)
        if depth in depths:
            taps.append(tokens[:, prefix:])
    return vit.norm(tokens)[:, prefix:], taps


def patch_grid(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ViT's own patch embedding of standardized images: the teacher's NHWC grid."""
    return vit.patch_embed(images)
