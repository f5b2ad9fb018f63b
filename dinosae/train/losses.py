"""The autoencoder's losses: teacher alignment, pixel and perceptual reconstruction, hinge GAN.

Images are in [0, 1]. Each function returns a scalar averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Distance between student and teacher tokens (B, N, D).

    ``cosine`` (the paper's choice) is ``1 - cos`` per token: it constrains only
    directions, which is all a spherical latent keeps. ``mse`` (the ablation)
    also forces magnitudes to match.

    Example:
        >>> s = torch.randn(2, 4, 8)
        >>> round(float(alignment_loss(s, 3 * s)), 6)  # same directions
        0.0
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student tokens {tuple(student.shape)} and teacher tokens "
                         f"{tuple(teacher.shape)} differ in shape")
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean().clamp_min(0.0)
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    raise ValueError(f"unknown alignment loss {kind!r}; choose 'cosine' or 'mse'")


def l1_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error.

    Example:
        >>> float(l1_loss(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)))
        1.0
    """
    return (reconstruction.float() - target.float()).abs().mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: push real logits above 1 and fake ones below -1.

    Example:
        >>> float(hinge_discriminator_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)))
        0.0
    """
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: raise the discriminator's logits on reconstructions.

    Example:
        >>> float(hinge_generator_loss(torch.tensor([1.0, 3.0])))
        -2.0
    """
    return -fake_logits.float().mean()


def adaptive_gan_weight(reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor,
                        last_layer: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """Scale for the GAN loss so its gradient at ``last_layer`` matches the reconstruction's.

    The ratio of gradient norms (as in VQGAN) keeps the adversarial term from
    swamping or vanishing against L1 + LPIPS whatever their current size. It is
    a detached scalar.

    Example:
        >>> w = torch.nn.Parameter(torch.randn(3))
        >>> round(float(adaptive_gan_weight((2 * w).sum(), w.sum(), w)), 3)
        2.0
    """
    rec_grad, = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)
    gan_grad, = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
