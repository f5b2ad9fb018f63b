"""File names made from what users and files provide (class names, keys): never a path."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 64) -> str:
    """``text`` as one file-name component: runs of anything but letters, digits, ``.``, ``_`` and ``-``
    become ``_``, no leading dot, at most ``limit`` characters, never empty.

    Example:
        >>> safe_name("../../etc/passwd"), safe_name("tabby cat"), safe_name(".."), safe_name("")
        ('_.._etc_passwd', 'tabby_cat', '_', '_')
    """
    name = _UNSAFE.sub("_", str(text)).lstrip(".")[:limit]
    return name if name.strip("._") else "_"
