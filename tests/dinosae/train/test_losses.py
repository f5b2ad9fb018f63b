"""The autoencoder's losses against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinosae.train.losses import (adaptive_gan_weight, alignment_loss, hinge_discriminator_loss, hinge_generator_loss,
                                  l1_loss)


def test_cosine_alignment_ignores_magnitudes_and_matches_its_definition():
    student, teacher = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    scale = torch.rand(2, 5, 1) * 10 + 0.1
    expected = (1 - (F.normalize(student, dim=-1) * F.normalize(teacher, dim=-1)).sum(-1)).mean()
    torch.testing.assert_close(alignment_loss(student, teacher), expected)
    torch.testing.assert_close(alignment_loss(student * scale, teacher), expected)


def test_mse_alignment_sees_magnitudes():
    student = torch.randn(2, 5, 16)
    assert float(alignment_loss(student, student * 2, "mse")) == pytest.approx(float(student.pow(2).mean()))


def test_alignment_rejects_mismatched_shapes_and_unknown_kinds():
    with pytest.raises(ValueError, match="differ in shape"):
        alignment_loss(torch.randn(2, 4, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="unknown alignment"):
        alignment_loss(torch.randn(2, 4, 8), torch.randn(2, 4, 8), "l2")


def test_l1_and_hinge_losses():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(l1_loss(a, b), (a - b).abs().mean())
    real, fake = torch.randn(64), torch.randn(64)
    expected = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), expected)
    torch.testing.assert_close(hinge_generator_loss(fake), -fake.mean())


def test_adaptive_weight_is_the_ratio_of_gradient_norms_and_clamped():
    weight = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(8, 3)
    rec = (x @ weight.T).pow(2).mean()
    gan = (x @ weight.T).mean()
    g_rec, = torch.autograd.grad(rec, weight, retain_graph=True)
    g_gan, = torch.autograd.grad(gan, weight, retain_graph=True)
    expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    torch.testing.assert_close(adaptive_gan_weight(rec, gan, weight), expected)
    assert float(adaptive_gan_weight(rec, 0 * gan, weight, max_weight=5.0)) == 5.0
