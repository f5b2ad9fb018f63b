"""Resuming a run as it was: its own configs, its own data, and only the changes asked for.

A resumed run takes its stored configs. What the caller set on purpose is
compared with them (``ResolvedRun.explicit``; a Python caller's whole config
otherwise): a difference in anything that changes the result is refused with
the list of differences, unless ``override`` is passed, and an overridden
resume logs and records what changed. Settings of the machine rather than of
the run (``RUNTIME`` fields: workers, compilation, logging cadence) follow the
caller without comparison. ``steps`` may change freely (to extend a run)
unless the learning-rate schedule depends on it. The data (an image folder or
a latent cache) must be the one the run was trained on: same count and same
listing, wherever it lives now.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Collection, TypeVar

from dinosae.config import from_dict
from dinosae.io.checkpoint import Checkpoint

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ResumeMismatchError(ValueError):
    """A resume asked for settings or data other than the run's own, without ``override``."""


def continue_config(cls: type[T], stored: dict[str, Any], given: T | None, explicit: Collection[str] | None,
                    section: str, changes: list[str]) -> T:
    """The stored config ``stored`` (a dict of ``cls``'s fields) with the ``explicit`` fields of ``given``
    (all when None; nothing when ``given`` is None) applied; appends to ``changes`` each one that alters
    the run.

    Example:
        >>> from dinosae.config import AETrainConfig, to_dict
        >>> changes = []
        >>> config = continue_config(AETrainConfig, to_dict(AETrainConfig(lr=1e-5)),
        ...                          AETrainConfig(lr=1e-4, num_workers=0), {"lr", "num_workers"}, "train", changes)
        >>> config.lr, config.num_workers, changes
        (0.0001, 0, ['train.lr: 1e-05 -> 0.0001'])
    """
    run = from_dict(cls, stored, section)
    if given is None:
        return run
    names = [f.name for f in dataclasses.fields(cls)] if explicit is None else sorted(explicit)
    runtime = getattr(cls, "RUNTIME", ())
    for name in names:
        before, after = getattr(run, name), getattr(given, name)
        if before == after or name in runtime:
            continue
        if name == "steps" and not run.schedule_depends_on_steps():
            logger.info("resuming toward %d steps (the run had %d)", after, before)
            continue
        changes.append(f"{section}.{name}: {before!r} -> {after!r}")
    return dataclasses.replace(run, **{name: getattr(given, name) for name in names})


class Continuation:
    """What a run continues from: a resumed run's checkpoint, or nothing for a fresh start.

    Example:
        >>> from dinosae.config import AETrainConfig, to_dict
        >>> fresh = Continuation(None)
        >>> fresh.config(AETrainConfig, "train_config", AETrainConfig(lr=1e-4), "train").lr
        0.0001
        >>> fresh.settle({"count": 3}, False, "run")
        {'data': {'count': 3}, 'resumes': []}
        >>> stored = {"train_config": to_dict(AETrainConfig(lr=1e-5)), "data": {"count": 3, "listing": "x"}}
        >>> resumed = Continuation(stored, step=7, explicit={"train": {"lr"}})
        >>> resumed.config(AETrainConfig, "train_config", AETrainConfig(lr=1e-4), "train").lr
        0.0001
        >>> resumed.settle({"path": "/d", "count": 3, "listing": "x"}, override=True, run_dir="run")["resumes"]
        [{'step': 7, 'changes': ['train.lr: 1e-05 -> 0.0001']}]
    """

    def __init__(self, meta: dict[str, Any] | None, step: int = 0,
                 explicit: dict[str, Collection[str] | None] | None = None) -> None:
        self.meta, self.step, self.explicit = meta, step, explicit or {}
        self.changes: list[str] = []

    @classmethod
    def of(cls, checkpoint: Checkpoint | None,
           explicit: dict[str, Collection[str] | None] | None = None) -> Continuation:
        """The continuation of a resumed run's checkpoint, or of a fresh start (None)."""
        if checkpoint is None:
            return cls(None, explicit=explicit)
        return cls(checkpoint.meta, checkpoint.step, explicit)

    def config(self, cls: type[T], key: str, given: T | None, section: str) -> T:
        """The config to run with: ``given`` for a fresh run, the stored ``meta[key]`` with the explicit
        fields of ``given`` for a resumed one (see :func:`continue_config`)."""
        if self.meta is None:
            if given is None:
                raise ValueError(f"a new run needs its {section} config")
            return given
        return continue_config(cls, self.meta[key], given, self.explicit.get(section), section, self.changes)

    def settle(self, data: dict[str, Any], override: bool, run_dir: str, what: str = "data") -> dict[str, Any]:
        """Compare the data's identity ``data`` with the run's, then refuse the changes, or log them with
        ``override``; returns what the run records of where it stands: ``{"data": data, "resumes": the
        resumes with changes so far, this one included}``."""
        if self.meta is None:
            return {"data": data, "resumes": []}
        compare_data(self.meta.get("data"), data, what, self.changes)
        _refuse_or_log(self.changes, override, run_dir)
        resumes = list(self.meta.get("resumes", []))
        if self.changes:
            resumes.append({"step": self.step, "changes": self.changes})
        return {"data": data, "resumes": resumes}


def compare_data(stored: dict[str, Any] | None, current: dict[str, Any], what: str, changes: list[str]) -> None:
    """Append to ``changes`` if the data's identity (count and listing hash) differs from the run's.

    Example:
        >>> changes = []
        >>> compare_data({"path": "/a", "count": 3, "listing": "x"}, {"path": "/b", "count": 4, "listing": "y"},
        ...              "data", changes)
        >>> changes
        ['data: 3 items in /a -> 4 items in /b (another listing)']
    """
    if not stored:
        return  # a run of an earlier version, which did not record its data
    if (stored.get("count"), stored.get("listing")) != (current["count"], current["listing"]):
        changes.append(f"{what}: {stored.get('count')} items in {stored.get('path')} -> {current['count']} items "
                       f"in {current['path']} (another listing)")
    elif stored.get("path") != current["path"]:
        logger.info("%s: the run's %s, now read from %s (the same listing)", what, stored.get("path"),
                    current["path"])


def _refuse_or_log(changes: list[str], override: bool, run_dir: str) -> None:
    if not changes:
        return
    if not override:
        raise ResumeMismatchError(f"{run_dir!r} was trained with other settings or data: {'; '.join(changes)}. "
                                  "Drop those flags to continue it as it was, or pass --override to continue with "
                                  "the new ones")
    logger.warning("resuming %s with changes: %s", run_dir, "; ".join(changes))
