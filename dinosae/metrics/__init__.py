"""Image metrics for DINO-SAE: reconstruction (PSNR, SSIM, LPIPS), distribution (FID, IS,
precision/recall, sliced Wasserstein) and representation quality (linear probe). All weights load offline.

Example:
    >>> import torch
    >>> from dinosae import metrics
    >>> x = torch.rand(2, 3, 16, 16)
    >>> metrics.psnr(x, x).isinf().all().item(), metrics.ssim(x, x).tolist()
    (True, [1.0, 1.0])
"""

from .fid import FeatureStats, compute_fid, compute_stats, frechet_distance, inception_score, save_stats
from .folder import ImageSource, read_image
from .image import directional_variation, psnr, ssim
from .inception import InceptionFeatures, tf1_bilinear_resize
from .lpips import LPIPS, load_vgg16_weights
from .precision_recall import PrecisionRecall, knn_radii, precision_recall
from .probe import linear_probe
from .sliced import sliced_wasserstein

__all__ = [
    "LPIPS",
    "FeatureStats",
    "ImageSource",
    "InceptionFeatures",
    "PrecisionRecall",
    "compute_fid",
    "compute_stats",
    "directional_variation",
    "frechet_distance",
    "inception_score",
    "knn_radii",
    "linear_probe",
    "load_vgg16_weights",
    "precision_recall",
    "psnr",
    "read_image",
    "save_stats",
    "sliced_wasserstein",
    "ssim",
    "tf1_bilinear_resize",
]
