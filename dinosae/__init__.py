"""DINO-SAE: a spherical autoencoder on a frozen DINOv3 ViT, and Riemannian flow matching on its latents."""

__version__ = "0.1.0"
