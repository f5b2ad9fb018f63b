"""Data: image folders (listing, the index file of a listing, decoding) and tar shards, the
resumable batch order of training runs, the photos bundled with scikit-image, and a toy
distribution on spheres with a known density."""
