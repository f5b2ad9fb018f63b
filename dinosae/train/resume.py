"""Resuming a run as it was: its own configs, its own data, and only the changes asked for.

The configs of a resumed run are the last layer of their resolution
(``dinosae.config.resolve.ResolvedRun.resumed``): the run's own, with the fields
the caller set on purpose applied and each one that changes the run listed.
The data (an image folder or a latent cache) must be the one the run was
trained on: the same count and listing, wherever it lives now. Any change is
refused with the list of differences, unless ``override`` is passed; an
overridden resume logs and records what changed.
"""

from __future__ import annotations

import logging
from typing import Any

from dinosae.config import ResolvedRun
from dinosae.io.checkpoint import Checkpoint
from dinosae.io.protocol import differences

logger = logging.getLogger(__name__)


class ResumeMismatchError(ValueError):
    """A resume asked for settings or data other than the run's own, without ``override``."""


def continue_run(resolved: ResolvedRun, previous: Checkpoint | None, keys: tuple[str, str]) -> ResolvedRun:
    """The configs to train with: ``resolved`` for a new run; for a resumed one, the run's stored configs
    (``previous.meta[keys[0]]`` and ``[keys[1]]``) with the fields set on purpose applied."""
    if previous is None:
        return resolved
    return resolved.resumed(previous.meta[keys[0]], previous.meta[keys[1]], previous.step)


def settle(resolved: ResolvedRun, previous: Checkpoint | None, data: dict[str, Any], override: bool, run_dir: str,
           what: str = "data") -> dict[str, Any]:
    """Compare the data's identity ``data`` with a resumed run's, then refuse the changes (of configs and data),
    or log them with ``override``; returns what the run records of where it stands: ``{"data": data, "resumes":
    the resumes with changes so far, this one included}``.

    Example:
        >>> from dinosae.config import RunRequest, resolve_ae_run
        >>> settle(resolve_ae_run(RunRequest("tiny")), None, {"count": 3}, False, "run")
        {'data': {'count': 3}, 'resumes': []}
    """
    if previous is None:
        return {"data": data, "resumes": []}
    changes = list(resolved.changes)
    stored = previous.meta.get("data") or {}
    moved = differences({k: stored.get(k) for k in ("count", "listing")}, {k: data[k] for k in ("count", "listing")})
    if moved:
        changes.append(f"{what}: {stored.get('count')} items in {stored.get('path')} -> {data['count']} items in "
                       f"{data['path']} (another listing)")
    elif stored.get("path") != data.get("path"):
        logger.info("%s: the run's %s, now read from %s (the same listing)", what, stored.get("path"), data.get("path"))
    if changes and not override:
        raise ResumeMismatchError(f"{run_dir!r} was trained with other settings or data: {'; '.join(changes)}. "
                                  "Drop those flags to continue it as it was, or pass --override to continue with "
                                  "the new ones")
    if changes:
        logger.warning("resuming %s with changes: %s", run_dir, "; ".join(changes))
    resumes = list(previous.meta.get("resumes", []))
    if changes:
        resumes.append({"step": previous.step, "changes": changes})
    return {"data": data, "resumes": resumes}
