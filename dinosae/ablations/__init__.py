"""Ablations of the paper's design choices, each trained and measured at the same budget.

One module per ablation, imported by name (``from dinosae.ablations.align import
ablate_align``), so that one ablation's dependencies never load with another:

- ``align``: cosine against MSE alignment of the student tokens to the teacher's.
- ``path``: Riemannian against Euclidean flow matching.
"""
