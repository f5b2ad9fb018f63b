"""Run by ``torchrun`` from ``test_sample.py``: ``dinosae sample`` whose rank 1 dies after its first shard."""

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import dinosae.pipelines.sample as sample  # noqa: E402
from dinosae.cli import main  # noqa: E402

real = sample.generate_images
calls = []


def dying(*args, **kwargs):
    calls.append(1)
    if os.environ.get("RANK") == "1" and len(calls) == 2:
        raise RuntimeError("rank 1 lost its device")
    return real(*args, **kwargs)


if __name__ == "__main__":
    sample.generate_images = dying
    main(sys.argv[1:])
