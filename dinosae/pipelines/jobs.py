"""The one shape of a resumable sharded job (``dinosae encode``, ``dinosae sample``): claim a folder, keep
the shards that can be trusted, split the rest over the ranks, merge when every shard is there.

A job's folder is written by one job at a time (its lock, ``dinosae.io.lock.exclusive``) and records
what it is made with in ``protocol.json`` before the first shard (``dinosae.io.protocol.claim``): a
rerun with the same protocol resumes, one with another is refused, so that a finished folder is never
silently mixed with other work. Shard ``i`` is rank ``i % world_size``'s; a shard already there is
checked before it is trusted, and one that fails its check is made again. The protocol carries a
``format_version``: a folder of another version is refused rather than read with a guess (one written
before the field existed is version 1).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from dinosae.io.protocol import PROTOCOL, ProtocolMismatchError, claim
from dinosae.runtime import DistEnv

FORMAT_VERSION = 1


def claim_folder(env: DistEnv, folder: Path, protocol: Mapping[str, Any], what: str, shard_glob: str) -> None:
    """On the main rank (every rank gets its error): record ``protocol`` (with the format version) in
    ``folder``, or refuse a folder made with another, or one that holds shards (``shard_glob``) of an
    unknown protocol.

    Example:
        >>> import tempfile
        >>> from dinosae.runtime import init_distributed
        >>> folder = Path(tempfile.mkdtemp())
        >>> claim_folder(init_distributed("cpu"), folder, {"seed": 0}, "samples", "shard_*.npz")
        >>> sorted(p.name for p in folder.iterdir())
        ['protocol.json']
    """
    def check() -> None:
        if not (folder / PROTOCOL).is_file() and any(folder.glob(shard_glob)):
            raise ProtocolMismatchError(f"{str(folder)!r} holds shards made with an unknown protocol (no {PROTOCOL}); "
                                        "choose another --out")
        # A protocol written before the version field is this version's.
        claim(folder, {**protocol, "format_version": FORMAT_VERSION}, what,
              "choose another --out, or rerun with the same settings to resume", defaults={"format_version": 1})

    env.on_main(check)


def shards_to_do(env: DistEnv, count: int, path: Callable[[int], Path],
                 problem: Callable[[Path, int], str | None]) -> list[int]:
    """This rank's shards (``i % world_size == rank``) that are still to be made: those whose file is
    missing, and those whose ``problem(path, i)`` says why they cannot be trusted (a warning names it).

    Example:
        >>> import tempfile
        >>> from dinosae.runtime import init_distributed
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "0").write_text("fine"), (root / "1").write_text("cut")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     todo = shards_to_do(init_distributed("cpu"), 3, lambda i: root / str(i),
        ...                         lambda p, i: None if p.read_text() == "fine" else "it is truncated")
        >>> todo, str(caught[0].message)
        ([1, 2], 'making 1 again: it is truncated')
    """
    todo = []
    for index in range(env.rank, count, env.world_size):
        shard = path(index)
        reason = problem(shard, index) if shard.is_file() else None
        if reason is not None:
            warnings.warn(f"making {shard.name} again: {reason}", stacklevel=2)
        if reason is not None or not shard.is_file():
            todo.append(index)
    return todo


def missing_shards(count: int, path: Callable[[int], Path]) -> list[str]:
    """The names of the shards that are not there yet (a merge needs none missing).

    Example:
        >>> missing_shards(2, lambda i: Path(f"/nonexistent/shard_{i}"))
        ['shard_0', 'shard_1']
    """
    return [path(i).name for i in range(count) if not path(i).is_file()]
