"""DINO-SAE: the spherical encoder and the decoder as one model."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

import sphere_ops
from dinosae.config import AEConfig
from dinosae.models.decoder import Decoder
from dinosae.models.encoder import DinoSphericalEncoder
from dinosae.models.pretrained import PretrainedMixin


class SphericalAutoencoder(PretrainedMixin, nn.Module):
    """Images in [0, 1] -> unit latents (B, N, D) -> images in [0, 1].

    ``encode`` returns the spherical latent: each token's direction, which is
    what flow matching models. What the decoder takes is a convention of the
    decoder's training (``config.latent_scale``): this toolkit's decoders take
    a unit token times sqrt(D); the official release's take the encoder's
    final-norm token as it is, magnitude included. ``forward`` (a
    reconstruction) always decodes what the encoder produced, as the decoder
    was trained to; ``decode`` takes unit latents (from ``encode`` or a
    generator) and scales them by ``config.decode_scale`` when set (the HAE
    paper's s_vae), else by the convention's own factor.

    ``state_dict`` keys start with ``encoder.stem.``, ``encoder.vit.`` and
    ``decoder.``. Checkpoints store the frozen ViT only when it is not read
    from a teacher-weights file (a random teacher cannot be rebuilt otherwise).
    ``teacher_origin`` is the file the ViT's weights came from (None: random);
    it outlives ``teacher_weights`` when the ViT is reloaded from a folder
    that carries it (``save_pretrained`` / ``from_pretrained``).

    Example:
        >>> import warnings
        >>> from dinosae.config import AE_PRESETS, preset
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     model = SphericalAutoencoder(preset(AE_PRESETS, "tiny"))
        >>> images = torch.rand(2, 3, 64, 64)
        >>> model.encode(images).shape, model(images).shape
        (torch.Size([2, 16, 192]), torch.Size([2, 3, 64, 64]))
    """

    pretrained_kind = "autoencoder"

    def __init__(self, config: AEConfig, teacher_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.teacher_weights = None if teacher_weights is None else str(teacher_weights)
        self.teacher_origin: str | None = self.teacher_weights
        self.encoder = DinoSphericalEncoder(config.vit, config.image_size, config.stem, teacher_weights,
                                            config.stem_norm, config.pixel_input, config.vit_depth)
        self.decoder = Decoder(self.encoder.dim, config.decoder)

    @property
    def latent_dim(self) -> int:
        return self.encoder.dim

    @property
    def latent_gain(self) -> float:
        """The factor that turns a unit latent into the decoder's input."""
        config = self.config
        if config.decode_scale is not None:
            return config.decode_scale
        if config.latent_scale == "sqrt_dim":
            return math.sqrt(self.latent_dim)
        if config.latent_scale == "raw_tokens":
            raise ValueError("this decoder takes the encoder's tokens with their magnitudes (latent_scale "
                             "'raw_tokens'): decoding unit latents needs decode_scale, the token norm to "
                             "decode at (the HAE paper's s_vae: 14 for DINOv3 ViT-L)")
        return float(config.latent_scale)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Unit latents (B, N, D) of images in [0, 1]."""
        return self.encoder(images)

    def decoder_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the decoder takes for the encoder's final-norm ``tokens`` (B, N, D)."""
        if self.config.latent_scale == "raw_tokens":
            return tokens
        return sphere_ops.normalize(tokens) * self.latent_gain

    def to_pixels(self, prediction: torch.Tensor) -> torch.Tensor:
        """The decoder's prediction as images in [0, 1] (not clamped: saturated pixels keep gradients)."""
        return prediction * 0.5 + 0.5 if self.config.pixel_output == "signed" else prediction

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from unit latents (B, N, D)."""
        return self.to_pixels(self.decoder(latents * self.latent_gain))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction of images in [0, 1]: encode, and decode as the decoder was trained."""
        return self.to_pixels(self.decoder(self.decoder_input(self.encoder.student_tokens(images))))

    def weights_to_save(self) -> dict[str, torch.Tensor]:
        """The state dict minus the frozen ViT when that comes from a weights file."""
        state = self.state_dict()
        if self.teacher_weights is not None:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.vit.")}
        return state
