"""One job per output directory, whatever its number of ranks: the main rank holds the directory's
lock (``dinosae.io.lock``) and clears what killed writers left in it; if it cannot, every rank
stops with its error. A rerun into a folder compares its settings with those the folder was written
with (:func:`changed_settings`)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from dinosae.io.lock import DirectoryLock
from dinosae.runtime import DistEnv, on_main

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, what: str, env: DistEnv,
              clean: Callable[[Path], list[Path]] | None = None) -> Iterator[None]:
    """Hold ``directory``'s lock for the block; ``clean(directory)`` then removes leftovers.

    Example:
        >>> import tempfile
        >>> from dinosae.runtime import init_distributed
        >>> with exclusive(tempfile.mkdtemp(), "a run", init_distributed("cpu")):
        ...     pass
    """
    directory = Path(directory)
    lock = DirectoryLock(directory, what)

    def take() -> None:
        lock.acquire()
        try:
            if lock.took_over is not None:
                logger.warning("took over the lock of %s %s: %s", what, directory, lock.took_over["reason"])
            removed = clean(directory) if clean is not None else []
            if removed:
                logger.info("removed %d leftover(s) of interrupted writes in %s (%s, ...)", len(removed),
                            directory, removed[0].name)
        except BaseException:
            lock.release()
            raise

    on_main(env, take)
    try:
        yield
    finally:
        if env.is_main:
            lock.release()


def changed_settings(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings a folder was written with (``recorded``) that differ from those asked for now.

    Example:
        >>> changed_settings({"seed": 0, "steps": 50}, {"seed": 3, "steps": 50, "new_field": 1})
        ['seed']
    """
    return sorted(key for key, value in recorded.items() if wanted.get(key) != value)
