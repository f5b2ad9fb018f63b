"""Training: the autoencoder's stages and the DiT, with the machinery they share
(checkpoints, EMA, distributed setup, logging, per-step randomness)."""
