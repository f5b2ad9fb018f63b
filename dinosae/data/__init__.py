"""Data: image folders and their decoding, the resumable batch order of training runs, the
photos bundled with scikit-image, and a toy distribution on spheres with a known density."""
