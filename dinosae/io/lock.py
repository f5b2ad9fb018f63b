"""One writer per directory: an exclusive lock file that also works on a shared filesystem.

A run directory, a latent cache or a sample folder is written by one job at a
time; a second writer gets a one-line error naming the holder. The lock is a
file ``DIR/.dinosae.lock`` created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems, NFSv3+ and Lustre, where ``flock`` may not reach other hosts). It
records the holder (host, boot, pid, SLURM job and restart count, command) and
its modification time is a heartbeat, refreshed by a daemon thread while held.

A lock is stale, and is taken over, when its holder is gone:

- on this host (same boot) its process no longer exists;
- it is an earlier incarnation of this SLURM job (same job id, lower restart
  count: a requeued job finds the lock its preempted self never released);
- otherwise its heartbeat is older than ``stale_after`` seconds (a dead host).

Taking over renames the stale file aside under a name that carries the holder
judged stale, then checks that the renamed file is that holder's; if a live
writer had replaced it meanwhile, its lock is put back (``os.link`` fails
rather than overwrite), so two writers can never both hold the directory.

A job of many ranks writes a directory as one writer: :func:`exclusive` has
its main rank hold the lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TypeVar

from dinosae.io.atomic import naming

logger = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_NAME = ".dinosae.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0


class DirectoryLockedError(FileExistsError):
    """Another live process writes the directory."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _holder_record(token: str) -> dict[str, Any]:
    return {"token": token, "host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            "command": " ".join(sys.argv)[:300], "started": time.time()}


def _record(path: Path) -> dict[str, Any]:
    """A lock file's holder record, or ``{}`` for one that is not a record (not UTF-8 JSON, not a mapping, or
    a symlink, which is never followed)."""
    if path.is_symlink():
        return {}
    try:
        record = json.loads(path.read_bytes().decode())
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


class DirectoryLock:
    """An exclusive lock on ``directory``, held from :meth:`acquire` (or ``with``) to :meth:`release`.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> with DirectoryLock(root, "a run"):
        ...     try:
        ...         DirectoryLock(root, "a run").acquire()
        ...     except DirectoryLockedError as error:
        ...         print(str(error).split(" by ")[0])  # doctest: +ELLIPSIS
        a run ... is being written
        >>> DirectoryLock(root, "a run").acquire().release()  # free again
    """

    def __init__(self, directory: str | os.PathLike, what: str = "directory", *,
                 stale_after: float | None = None, heartbeat: float = HEARTBEAT_S) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self.stale_after = stale_after if stale_after is not None else float(
            os.environ.get("DINOSAE_LOCK_STALE_S", STALE_AFTER_S))
        self.heartbeat = heartbeat
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict[str, Any] | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise ``DirectoryLockedError`` naming the live holder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        record = json.dumps(_holder_record(self.token))
        for _ in range(8):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is None:
                    continue  # released between our open and our read
                reason = self._stale_reason(holder)
                if reason is None:
                    raise DirectoryLockedError(self._locked_message(holder)) from None
                if self._remove_stale(holder):
                    self.took_over = dict(holder, reason=reason)
                continue
            try:
                with naming(self.path):
                    os.write(fd, record.encode())
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                self.path.unlink(missing_ok=True)  # an empty lock would read as a holder that is starting
                raise
            os.close(fd)
            self._start_heartbeat()
            return self
        raise DirectoryLockedError(f"{self.what} {str(self.directory)!r}: could not take its lock "
                                   f"{str(self.path)!r} (other processes keep racing for it)")

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = self._read_holder()
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read_holder(self) -> dict[str, Any] | None:
        """The holder's record; ``{}`` for a file that is not one (a holder that died while writing it, bytes
        that are not UTF-8 JSON, a symlink), which is stale once its own time is old. Its age is taken from the
        file itself (``lstat``: a dangling symlink has one too)."""
        try:
            info = os.lstat(self.path)
            holder = _record(self.path)
        except FileNotFoundError:
            return None
        return dict(holder, heartbeat_age=time.time() - info.st_mtime)

    def _stale_reason(self, holder: dict[str, Any]) -> str | None:
        mine = _holder_record(self.token)
        pid = holder.get("pid")
        if type(pid) is not int or not 0 < pid < 1 << 31:
            pid = None  # a garbage record: judged by its heartbeat alone
        if pid is not None and holder.get("host") == mine["host"] and holder.get("boot_id") == mine["boot_id"]:
            if pid == mine["pid"]:
                return None  # this process holds it already: a second writer here is a bug, not stale
            if not _alive(pid):
                return f"its process {pid} on this host has ended"
            return None
        job = holder.get("slurm_job_id")
        restart = holder.get("slurm_restart")
        if job is not None and job == mine["slurm_job_id"] and type(restart) is int and restart < mine["slurm_restart"]:
            return f"it belongs to SLURM job {job} before its requeue"
        age = holder["heartbeat_age"]
        if age > self.stale_after:
            return f"its holder's last heartbeat was {age:.0f} s ago"
        if age < -self.stale_after:  # a time no live holder's clock writes: garbage
            return f"its heartbeat is {-age:.0f} s in the future"
        return None

    def _remove_stale(self, holder: dict[str, Any]) -> bool:
        """Move the stale lock aside; True if the file moved was the one judged stale."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another process took it over first
        try:
            moved = _record(aside)
        except FileNotFoundError:
            moved = {}
        if moved.get("token") == holder.get("token"):
            aside.unlink(missing_ok=True)
            return True
        try:
            os.link(aside, self.path)  # a live writer's lock: put it back, unless yet another took its place
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False

    def _locked_message(self, holder: dict[str, Any]) -> str:
        wait = (f"a dead holder's lock is taken over {self.stale_after:.0f} s after its last heartbeat, "
                f"{max(0.0, self.stale_after - holder['heartbeat_age']):.0f} s from now")
        if not holder.get("token"):
            return (f"{self.what} {str(self.directory)!r} is being written by a process that is starting, or its lock "
                    f"{str(self.path)!r} is not a lock's ({wait}); if no process writes it, delete that file")
        started = holder.get("started")
        when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
                if isinstance(started, (int, float)) and 0 <= started < 1e11 else "an unknown time")
        job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
        command = str(holder.get("command", ""))[:300]
        return (f"{self.what} {str(self.directory)!r} is being written by pid {holder.get('pid')} on "
                f"{holder.get('host')}{job} since {when} ({command!r}); wait for it or choose another output "
                f"({wait})")

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                try:
                    os.utime(self.path)
                except OSError:
                    pass  # a full or vanished filesystem: the run itself reports it at its next write

        self._thread = threading.Thread(target=beat, name=f"lock {self.path}", daemon=True)
        self._thread.start()


class Ranks(Protocol):
    """The processes of a job, as :func:`exclusive` needs them (``dinosae.runtime.DistEnv`` is one)."""

    @property
    def is_main(self) -> bool: ...

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the main rank; every rank returns its result or raises its error."""


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, what: str, ranks: Ranks,
              clean: Callable[[Path], list[Path]] | None = None) -> Iterator[None]:
    """Hold ``directory``'s lock for the block, on the main rank of ``ranks``; ``clean(directory)`` then
    removes what killed writers left. If either fails, every rank stops with that error.

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

    ranks.on_main(take)
    try:
        yield
    finally:
        if ranks.is_main:
            lock.release()
