"""The ablations' problems: the latent floor compares the held-out set with training latents of its classes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dinosae.experiments.problems import matched_by_class


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.lists(st.integers(0, 7), min_size=1, max_size=40))
def test_every_held_out_label_gets_a_latent_of_its_class_used_evenly(labels, wanted):
    labels_t, wanted_t = torch.tensor(labels), torch.tensor(wanted)
    index = matched_by_class(labels_t, wanted_t)
    assert index.shape == wanted_t.shape and bool(((0 <= index) & (index < len(labels))).all())
    for c in set(wanted) & set(labels):
        picked = index[wanted_t == c]
        assert bool((labels_t[picked] == c).all())
        uses = torch.bincount(picked, minlength=len(labels))[labels_t == c]
        assert int(uses.max() - uses.min()) <= 1  # cycling, not piling on the first latent
    spare = {i for i, label in enumerate(labels) if label not in set(wanted)} or set(range(len(labels)))
    assert set(index[~torch.isin(wanted_t, labels_t)].tolist()) <= spare
