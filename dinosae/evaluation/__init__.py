"""Evaluation: reconstruction and generation metrics over folders and sample files, the
linear probe and the magnitude check of the paper, and the plots they write."""
