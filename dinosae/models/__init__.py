"""DINO-SAE's networks: the spherical autoencoder (stem, frozen DINOv3 ViT, decoder), its
discriminator, and the DiT that generates its latents. This layer imports only the configs
and ``sphere_ops``."""

from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.decoder import Decoder
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.dit import DiT
from dinosae.models.encoder import DinoSphericalEncoder
from dinosae.models.registry import create_model
from dinosae.models.stem import HierarchicalStem, PatchStem

__all__ = [
    "Decoder",
    "DiT",
    "DinoDiscriminator",
    "DinoSphericalEncoder",
    "HierarchicalStem",
    "PatchStem",
    "SphericalAutoencoder",
    "create_model",
]
