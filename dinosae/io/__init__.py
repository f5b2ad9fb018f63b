"""Everything that reads or writes files: checkpoints, official release files, latent caches,
image grids, and atomic writes (a crash never leaves a half-written file under its final name)."""
