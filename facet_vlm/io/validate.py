"""Check a set of scan files before a long job: read each one and report every failure, never stopping early."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FacetVLMError
from ..progress import progress_bar


@dataclass
class ValidationReport:
    """The outcome of `validate_files`: the paths that read fine and (path, error message) for the others."""

    ok: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_checked(self) -> int:
        return len(self.ok) + len(self.bad)

    def __str__(self) -> str:
        lines = [f"{self.num_checked} files checked: {len(self.ok)} ok, {len(self.bad)} bad"]
        lines += [f"  BAD {path}\n      {message}" for path, message in self.bad]
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (``{"ok": [...], "bad": [{"path": ..., "error": ...}]}``); return the path."""
        path = Path(path)
        payload = {"ok": asdict(self)["ok"], "bad": [{"path": p, "error": message} for p, message in self.bad]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path


def find_scan_files(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` (recursively, sorted) whose extension `facet_vlm.io.read_face` reads; broken
    symbolic links with such an extension are listed too, so that `validate_files` reports them."""
    from . import SUPPORTED_EXTENSIONS

    return sorted(
        p
        for p in Path(root).rglob("*")
        if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in SUPPORTED_EXTENSIONS
    )


def validate_files(
    paths: Iterable[str | os.PathLike] | str | os.PathLike, progress: bool = True, **read_options: Any
) -> ValidationReport:
    """Read every file with `facet_vlm.io.read_face` and collect the failures instead of stopping at the first.

    Args:
        paths: files, or folders (searched recursively for readable scans with `find_scan_files`). A file with an
            unsupported extension that is named explicitly is reported as bad, not skipped.
        progress: show a tqdm progress bar.
        **read_options: passed to `read_face` (e.g. ``load_texture=False``).

    Every file ends up in exactly one of ``report.ok`` and ``report.bad``; an unexpected exception (a bug, not
    bad input) is reported too, with its type, so that one odd file cannot end a long check.
    """
    from . import read_face

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        item = Path(item)
        files.extend(find_scan_files(item) if item.is_dir() else [item])
    report = ValidationReport()
    for file in progress_bar(files, desc="validating scans", unit="file", enabled=progress):
        try:
            read_face(file, **read_options)
        except FacetVLMError as error:
            report.bad.append((str(file), f"{type(error).__name__}: {error}"))
        except Exception as error:  # reported, never dropped (see docstring)
            report.bad.append((str(file), f"unexpected {type(error).__name__}: {error}"))
        else:
            report.ok.append(str(file))
    return report
