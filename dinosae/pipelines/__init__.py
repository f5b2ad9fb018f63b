"""Whole jobs over a data set that scale out under ``torchrun``: encoding a folder into a latent
cache. Their results do not depend on the number of processes."""
