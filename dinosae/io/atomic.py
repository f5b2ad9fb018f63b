"""Atomic writes: a file is written under a temporary name, flushed, and renamed into place.

Whatever moment a process dies at, a reader finds either the previous file or
the complete new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from safetensors import SafetensorError


# Names of files and directories being written: a crash leaves them behind, and only they start so.
TEMP_PREFIX = ".tmp."


def umask() -> int:
    """The process's file mode creation mask, read without changing it (``os.umask`` can only set it, which a
    second thread would see).

    Example:
        >>> 0 <= umask() <= 0o777
        True
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared(path: Path, directory: bool = False) -> Path:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666 or 0777 less the umask): ``mkstemp`` and
    ``mkdtemp`` make their files private, and a folder renamed into place would stay unreadable to the
    colleagues it is written for."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())
    return path


def temporary_dir(parent: Path, name: str) -> Path:
    """A fresh staging directory in ``parent`` for what will be renamed to ``name`` (with the umask's mode)."""
    return shared(Path(tempfile.mkdtemp(dir=parent, prefix=f"{TEMP_PREFIX}{name}.")), directory=True)


def remove_leftovers(directory: str | os.PathLike) -> list[Path]:
    """Delete what killed writers left in ``directory`` (temporary files and staging directories);
    returns what was removed. Call it only while holding the directory's lock: a live writer's
    temporary files look the same.

    Example:
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = temporary_dir(root, "step_00000001")
        >>> [p.name.split(".")[2] for p in remove_leftovers(root)], list(root.iterdir())
        (['step_00000001'], [])
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        if path.name.startswith(TEMP_PREFIX):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """Make an ``OSError`` raised while writing ``path`` name it, and a safetensors I/O error an
    ``OSError``: "No space left on device: RUN/checkpoints/.../model.safetensors", not a bare errno.

    Example:
        >>> with naming("out/a.bin"):
        ...     raise OSError(28, "No space left on device")
        Traceback (most recent call last):
        ...
        OSError: [Errno 28] No space left on device: 'out/a.bin'
    """
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from error


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = write_atomic(target, lambda tmp: tmp.write_text("done"))
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = shared(Path(tmp_name))
    try:
        with naming(path):
            write(tmp)
            fsync_file(tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> path = write_json(Path(tempfile.mkdtemp()) / "m.json", {"psnr": 21.5})
        >>> json.loads(path.read_text())
        {'psnr': 21.5}
    """
    return write_text(path, json.dumps(data, indent=2, sort_keys=True))


def write_folder(directory: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Make ``directory`` whole or not at all: ``write(staging)`` fills a staging folder beside it, every file
    in it is flushed, and the folder is renamed into place. A non-empty ``directory`` is refused unless
    ``overwrite``, which replaces it (only once the new one is whole). Returns ``directory``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> _ = write_folder(target, lambda staging: (staging / "a.txt").write_text("a"))
        >>> write_folder(target, lambda staging: (staging / "b.txt").write_text("b"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileExistsError: ... is not empty; pass overwrite=True (dinosae export --force) to replace it
        >>> _ = write_folder(target, lambda staging: (staging / "b.txt").write_text("b"), overwrite=True)
        >>> sorted(p.name for p in target.iterdir())
        ['b.txt']
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{str(directory)!r} is a file, not a folder")
    occupied = directory.is_dir() and any(directory.iterdir())
    if occupied and not overwrite:
        raise FileExistsError(f"{str(directory)!r} is not empty; pass overwrite=True (dinosae export --force) to replace it")
    parent = directory.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_dir(parent, directory.name)
    aside: Path | None = None
    try:
        with naming(directory):
            write(staging)
        for path in staging.iterdir():
            fsync_file(path)
        fsync_dir(staging)
        if occupied:
            aside = temporary_dir(parent, f"old.{directory.name}")
            os.replace(directory, aside / directory.name)
        elif directory.is_dir():
            directory.rmdir()  # an empty folder: rename() would replace it, but only on POSIX
        os.replace(staging, directory)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None and not directory.exists() and (aside / directory.name).exists():
            os.replace(aside / directory.name, directory)  # the old folder back where it was
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return directory
