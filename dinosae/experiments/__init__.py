"""Experiments built from the training and evaluation layers: the end-to-end demo and the
ablations of the paper's design choices."""
