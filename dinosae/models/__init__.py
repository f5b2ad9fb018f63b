"""DINO-SAE's networks: the spherical autoencoder (stem, frozen DINOv3 ViT, decoder), its
discriminator, and the DiT that generates its latents."""

from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.decoder import Decoder
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.dit import DIT_PRESETS, LIGHTNING_FLAGS, DiT, DiTConfig, create_dit
from dinosae.models.encoder import DinoSphericalEncoder
from dinosae.models.loading import load_autoencoder
from dinosae.models.stem import HierarchicalStem, PatchStem

__all__ = [
    "DIT_PRESETS",
    "LIGHTNING_FLAGS",
    "Decoder",
    "DiT",
    "DiTConfig",
    "DinoDiscriminator",
    "DinoSphericalEncoder",
    "HierarchicalStem",
    "PatchStem",
    "SphericalAutoencoder",
    "create_dit",
    "load_autoencoder",
]
