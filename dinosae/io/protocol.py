"""What a folder was written with, and the one check before writing into it again.

A latent cache, a sample folder and a training run each record the settings that decide their contents
(``protocol.json`` beside the shards; a run's checkpoints hold its configs and its data's identity). A rerun
into the folder compares what it asks for with what was recorded: :func:`differences` lists what changed,
:func:`claim` refuses a folder made with other settings, or records them in a new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Collection, Mapping

from dinosae.io.atomic import write_json

PROTOCOL = "protocol.json"


class ProtocolMismatchError(ValueError):
    """A folder holds what other settings made; writing into it would mix the two."""


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any], ignore: Collection[str] = ()) -> list[str]:
    """``"key: recorded -> wanted"`` for every recorded key whose value differs from the one asked for now
    (keys in ``ignore`` aside; a key added since the folder was written counts where its value differs).

    Example:
        >>> differences({"seed": 0, "steps": 50, "path": "/a"}, {"seed": 3, "steps": 50, "path": "/b"}, ignore=["path"])
        ['seed: 0 -> 3']
    """
    keys = sorted((set(recorded) | set(wanted)) - set(ignore))
    return [f"{key}: {recorded.get(key)!r} -> {wanted.get(key)!r}" for key in keys if recorded.get(key) != wanted.get(key)]


def read_protocol(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings recorded at ``path`` (None where there are none); a ``ProtocolMismatchError`` for a file
    that is not one.

    Example:
        >>> read_protocol("/nonexistent/protocol.json") is None
        True
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise ProtocolMismatchError(f"{str(path)!r} is unreadable ({type(error).__name__}); delete it to start "
                                    "the folder afresh") from error
    if not isinstance(recorded, dict):
        raise ProtocolMismatchError(f"{str(path)!r} does not hold a mapping of settings; delete it to start the "
                                    "folder afresh")
    return recorded


def claim(folder: str | os.PathLike, protocol: Mapping[str, Any], what: str, hint: str,
          defaults: Mapping[str, Any] | None = None) -> None:
    """Record ``protocol`` in ``folder/protocol.json``, or, if the folder holds one, refuse it when the two
    differ (``what`` names the folder's kind, ``hint`` says what to do instead of rerunning). ``defaults``
    are the values of keys that a recorded protocol may lack (a field added since it was written).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> claim(folder, {"seed": 0}, "samples", "choose another --out")
        >>> claim(folder, {"seed": 1}, "samples", "choose another --out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dinosae.io.protocol.ProtocolMismatchError: '...' holds samples made with other settings (seed: 0 -> 1); choose another --out
    """
    path = Path(folder) / PROTOCOL
    recorded = read_protocol(path)
    if recorded is not None:
        changed = differences({**(defaults or {}), **recorded}, protocol)
        if changed:
            raise ProtocolMismatchError(f"{str(folder)!r} holds {what} made with other settings "
                                        f"({'; '.join(changed)}); {hint}")
    write_json(path, dict(protocol))
