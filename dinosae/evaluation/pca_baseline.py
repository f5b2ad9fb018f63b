"""A linear reference for an autoencoder: patch PCA with the same numbers per token.

An autoencoder whose latent holds ``k`` numbers per ``p``×``p`` patch should
at least match the best linear code of that size: the top ``k`` principal
components of the patches, fit on the same training images. When it does not,
what is missing is learning, not room in the latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinosae.metrics import LPIPS, psnr

__all__ = ["PatchPCA", "pca_baseline"]


class PatchPCA:
    """The top ``components`` principal components of non-overlapping ``patch``×``patch`` RGB patches.

    Fit in float64 on images (N, 3, H, W) in [0, 1]; codes are (N, tokens, components).

    Example:
        >>> images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> pca = PatchPCA.fit(images, patch=16, components=48)
        >>> pca.encode(images).shape, pca.reconstruct(images).shape
        (torch.Size([6, 4, 48]), torch.Size([6, 3, 32, 32]))
        >>> full = PatchPCA.fit(images, patch=16, components=3 * 16 * 16)
        >>> bool(torch.allclose(full.reconstruct(images), images, atol=1e-5))
        True
    """

    def __init__(self, mean: Tensor, basis: Tensor, patch: int) -> None:
        self.mean, self.basis, self.patch = mean, basis, patch

    @classmethod
    def fit(cls, images: Tensor, patch: int, components: int) -> PatchPCA:
        _check_images(images, patch)
        width = 3 * patch * patch
        if not 1 <= components <= width:
            raise ValueError(f"components must be between 1 and {width} (3 x {patch}^2), got {components}")
        patches = _to_patches(images.double(), patch).flatten(0, 1)
        mean = patches.mean(0)
        centred = patches - mean
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
        return cls(mean, vectors[:, -components:].flip(-1).contiguous(), patch)

    @property
    def components(self) -> int:
        return self.basis.shape[1]

    def encode(self, images: Tensor) -> Tensor:
        """The codes (N, tokens, components) of images (N, 3, H, W)."""
        _check_images(images, self.patch)
        return (_to_patches(images.double(), self.patch) - self.mean) @ self.basis

    def decode(self, codes: Tensor, height: int, width: int) -> Tensor:
        """Images (N, 3, height, width) in float32 from codes."""
        patches = codes.double() @ self.basis.T + self.mean
        return _from_patches(patches, self.patch, height, width).float()

    def reconstruct(self, images: Tensor) -> Tensor:
        """Encode then decode: the best linear reconstruction at this code size."""
        return self.decode(self.encode(images), images.shape[-2], images.shape[-1])


def pca_baseline(train: Tensor, splits: dict[str, Tensor], *, patch: int, components: int,
                 lpips: LPIPS | None = None) -> dict[str, dict[str, float]]:
    """Mean PSNR (dB) and LPIPS, per split, of :class:`PatchPCA` fit on ``train`` and applied to each split.

    Reconstructions are clamped to [0, 1], as an autoencoder's are when saved.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> train, test = torch.rand(8, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
        >>> result = pca_baseline(train, {"test": test}, patch=16, components=48)
        >>> list(result), list(result["test"])
        (['test'], ['psnr'])
    """
    pca = PatchPCA.fit(train, patch, components)
    device = None if lpips is None else next(lpips.parameters()).device
    result: dict[str, dict[str, float]] = {}
    for name, images in splits.items():
        images = images.float()
        reconstruction = pca.reconstruct(images).clamp(0, 1)
        metrics = {"psnr": float(psnr(reconstruction, images).mean())}
        if lpips is not None:
            metrics["lpips"] = float(lpips(reconstruction.to(device), images.to(device)).mean())
        result[name] = metrics
    return result


def _check_images(images: Tensor, patch: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a tensor (N, 3, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    if images.shape[-1] % patch or images.shape[-2] % patch:
        raise ValueError(f"image height and width must be multiples of the patch {patch}, got "
                         f"{tuple(images.shape[-2:])}")


def _to_patches(images: Tensor, patch: int) -> Tensor:
    """(N, 3, H, W) to (N, tokens, 3 * patch^2), tokens in row-major order: the decoder's pixel-block layout."""
    return F.pixel_unshuffle(images, patch).flatten(2).transpose(1, 2)


def _from_patches(patches: Tensor, patch: int, height: int, width: int) -> Tensor:
    grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, height // patch, width // patch)
    return F.pixel_shuffle(grid, patch)
