"""Whole jobs over a data set that scale out under ``torchrun`` and resume where they stopped: encoding a
folder into a latent cache (``encode``) and drawing samples (``sample``), both of the one shape of
``jobs``. Their results do not depend on the number of processes."""
