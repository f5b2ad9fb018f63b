"""DINO-SAE: the spherical encoder and the decoder as one model."""

from __future__ import annotations

import os

import torch
from torch import nn

from dinosae.config import AEConfig
from dinosae.models.decoder import Decoder
from dinosae.models.encoder import DinoSphericalEncoder


class SphericalAutoencoder(nn.Module):
    """Images in [0, 1] -> unit latents (B, N, D) -> images.

    ``state_dict`` keys start with ``encoder.stem.``, ``encoder.vit.`` and
    ``decoder.``. Checkpoints store the frozen ViT only when it is not read
    from a teacher-weights file (a random teacher cannot be rebuilt otherwise).

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

    def __init__(self, config: AEConfig, teacher_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.teacher_weights = None if teacher_weights is None else str(teacher_weights)
        self.encoder = DinoSphericalEncoder(config.vit, config.image_size, config.stem, teacher_weights,
                                            config.stem_norm)
        self.decoder = Decoder(self.encoder.dim, config.decoder)

    @property
    def latent_dim(self) -> int:
        return self.encoder.dim

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def weights_to_save(self) -> dict[str, torch.Tensor]:
        """The state dict minus the frozen ViT when that comes from a weights file."""
        state = self.state_dict()
        if self.teacher_weights is not None:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.vit.")}
        return state
