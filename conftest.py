"""Test configuration shared by every test and every docstring example (``--doctest-modules``).

Triton runs on the CPU through its interpreter, which must be switched on
before anything imports triton (torchvision, and so timm, import it too).
``SPHERE_OPS_TEST_DEVICE=cuda`` (bench/gpu_check.sh) leaves it off, so the
Triton kernels compile for the GPU and the CUDA tests run them.
"""

import os
import sys

if os.environ.get("SPHERE_OPS_TEST_DEVICE") != "cuda":
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        # Too late: triton read the variable at import (a plugin or a filterwarnings entry that
        # names a class imports torchvision/timm). Every Triton test would fail obscurely.
        raise RuntimeError("triton was imported before conftest.py could set TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"
# Spinning OpenMP workers stall (up to 25x) when other processes share the two cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
# A longer, randomized search for development: HYPOTHESIS_PROFILE=thorough pytest ...
settings.register_profile("thorough", max_examples=400, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict) -> None:
    """The names every docstring example may use without importing them."""
    import sphere_ops

    doctest_namespace.update(torch=torch, sphere_ops=sphere_ops)


@pytest.fixture(autouse=True, scope="session")
def _folder_indexes(tmp_path_factory) -> None:
    """Folder indexes (``dinosae.data.index``) of the tests' folders go to a temporary folder, not ~/.cache;
    subprocesses inherit it."""
    os.environ["DINOSAE_INDEX_DIR"] = str(tmp_path_factory.mktemp("indexes"))
