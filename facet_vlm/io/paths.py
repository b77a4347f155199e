"""Confining file access to given folders: a server (the Gradio Space) reads only files its users uploaded."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import UnsafePathError


def is_inside(path: str | os.PathLike, folders: Iterable[str | os.PathLike]) -> bool:
    """Whether `path`, with every symbolic link and ``..`` resolved, is a file inside one of `folders` (also
    resolved). A path that does not exist is not inside anything."""
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return False
    if not real.is_file():
        return False
    for folder in folders:
        try:
            root = Path(folder).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            continue
        if real.is_relative_to(root) and real != root:
            return True
    return False


def require_inside(paths: Iterable[str | os.PathLike], folders: Iterable[str | os.PathLike]) -> list[Path]:
    """`paths` as `Path` objects if every one is a file inside one of `folders` (see `is_inside`).

    Raises:
        UnsafePathError: naming the first path outside them (by its file name only, so that an error shown to a
            remote user does not reveal the server's folders).
    """
    folders = list(folders)
    checked = []
    for path in paths:
        if not is_inside(path, folders):
            raise UnsafePathError("refused: not a file uploaded to this application", Path(path).name)
        checked.append(Path(path))
    return checked
