"""The library's progress bars: one switch for all of them.

tqdm reads ``TQDM_DISABLE`` only for arguments a call does not pass, and every bar of the library passes
``disable`` (to keep the bar off on all but the main process, or when the caller asks for no progress). So the
variable is read here, once for every bar: data generation, rendering of 4D frames, scan validation and training.
"""

from __future__ import annotations

import os
from typing import Any

TRUE_VALUES = ("1", "true", "yes", "on")


def progress_disabled(enabled: bool = True) -> bool:
    """Whether a bar stays off: when the caller turned it off (`enabled` False: no progress asked, or not the
    local main process), and everywhere when ``TQDM_DISABLE`` is set to a true value."""
    return not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() in TRUE_VALUES


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A `tqdm.auto.tqdm` bar (same arguments) that honours `progress_disabled`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=progress_disabled(enabled), **kwargs)


__all__ = ["progress_bar", "progress_disabled"]
