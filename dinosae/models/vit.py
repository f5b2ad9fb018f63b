"""The frozen DINOv3 ViT: creation from a local weights file, and running it on a token grid.

The student and the teacher share one ViT; they differ only in what turns the
image into the NHWC token grid (the trainable stem or the ViT's own patch
embedding). ``run_on_grid`` is the ViT's ``forward_features`` with the patch
embedding taken out.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import timm
import torch
from torch import nn

# DINOv3's preprocessing: images in [0, 1] are standardized with ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomTeacherWarning(UserWarning):
    """The ViT has random weights: alignment, probing and the GAN teacher carry no meaning."""


def create_vit(name: str, image_size: int, weights: str | os.PathLike | None = None) -> nn.Module:
    """A frozen timm DINOv3 ViT in eval mode, with weights from a local file if given.

    ``weights`` is a ``.pth`` or ``.safetensors`` file in timm's key names or in
    Meta's original ones (timm converts those). Without it the ViT is randomly
    initialized, and a ``RandomTeacherWarning`` says so: nothing is downloaded.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     vit = create_vit("vit_tiny_patch16_dinov3_qkvb", image_size=64)
        >>> vit.embed_dim, any(p.requires_grad for p in vit.parameters())
        (192, False)
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"teacher weights {str(path)!r} do not exist")
        vit = timm.create_model(name, pretrained=True, img_size=image_size, num_classes=0,
                                pretrained_cfg_overlay=dict(file=str(path)))
    else:
        warnings.warn(f"no --teacher-weights given: {name} is randomly initialized, so the "
                      "teacher, the alignment loss and the discriminator features are not "
                      "DINOv3's and results are not meaningful", RandomTeacherWarning, stacklevel=2)
        vit = timm.create_model(name, pretrained=False, img_size=image_size, num_classes=0)
    if not getattr(vit, "dynamic_img_size", False):
        raise ValueError(f"{name} does not take NHWC token grids (dynamic_img_size); "
                         "use a timm DINOv3 ViT")
    vit.requires_grad_(False)
    return vit.eval()


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
