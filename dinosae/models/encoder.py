"""The spherical encoder: a trainable stem in front of a frozen DINOv3 ViT, tokens onto spheres."""

from __future__ import annotations

import os

import torch
from torch import nn

import sphere_ops
from dinosae.models.stem import create_stem
from dinosae.models.vit import create_vit, family_name, pixel_input, run_on_grid, teacher_grid


class DinoSphericalEncoder(nn.Module):
    """Images in [0, 1] (B, 3, H, W) to unit latents (B, H/16 * W/16, D).

    The latent of a token is the ViT's final-norm output for that token,
    L2-normalized: only its direction carries information, so the decoder sees
    points on S^(D-1). ``teacher_tokens`` runs the same ViT through its own patch
    embedding (on pixels standardized as the ViT was trained, and resized for a
    patch other than 16: ``dinosae.models.vit.teacher_grid``), which gives the
    alignment target. Only the stem trains; the ViT stays frozen and in
    eval mode whatever ``train()`` is called with. ``pixel_input`` is what the
    stem sees of images in [0, 1] (``dinosae.config.autoencoder.PIXEL_INPUTS``).

    ``teacher_missing`` says why the teacher cannot run, when its patch
    embedding was never loaded (an official file carries none): every use of
    the teacher then fails with that reason instead of running a random one.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     encoder = DinoSphericalEncoder("vit_tiny_patch16_dinov3_qkvb", image_size=64)
        >>> z = encoder(torch.rand(2, 3, 64, 64))
        >>> z.shape, bool(torch.allclose(z.norm(dim=-1), torch.ones(2, 16), atol=1e-6))
        (torch.Size([2, 16, 192]), True)
    """

    def __init__(self, vit_name: str, image_size: int, stem: str = "hierarchical",
                 teacher_weights: str | os.PathLike | None = None, stem_norm: str = "pixel",
                 pixel_input: str = "imagenet", vit_depth: int | None = None) -> None:
        super().__init__()
        self.vit = create_vit(vit_name, image_size, teacher_weights, depth=vit_depth)
        self.family = family_name(vit_name)
        self.dim = self.vit.embed_dim
        self.stem = create_stem(stem, self.dim, stem_norm)
        self.image_size = image_size
        self.pixel_input = pixel_input
        self.teacher_missing: str | None = None

    def train(self, mode: bool = True) -> "DinoSphericalEncoder":
        super().train(mode)
        self.vit.eval()
        return self

    def grid_size(self, image_size: int | None = None) -> int:
        return (image_size or self.image_size) // 16

    def _check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[-1] % 16 or images.shape[-2] % 16:
            raise ValueError(f"image height and width must be multiples of 16, got {tuple(images.shape[-2:])}")

    def student_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The ViT's output tokens (B, N, D) on the stem's grid, before projection to the sphere."""
        self._check(images)
        tokens, _ = run_on_grid(self.vit, self.stem(pixel_input(images, self.pixel_input)))
        return tokens

    def require_teacher(self, purpose: str) -> None:
        """Refuse ``purpose`` (what needs the teacher) when the teacher's patch embedding is not loaded."""
        if self.teacher_missing is not None:
            raise ValueError(f"{purpose} needs the {self.family} teacher, but {self.teacher_missing}")

    @torch.no_grad()
    def teacher_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen ViT's output tokens (B, N, D) through the ViT's own patch embedding."""
        self._check(images)
        self.require_teacher("the teacher's tokens")
        tokens, _ = run_on_grid(self.vit, teacher_grid(self.vit, images))
        return tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return sphere_ops.normalize(self.student_tokens(images))
