"""Console entry point ``facet-vlm-train`` (``facet-vlm-prepare`` is `facet_vlm.prepare.main`)."""

from __future__ import annotations

from collections.abc import Sequence


def train_main(argv: Sequence[str] | None = None) -> None:
    """``facet-vlm-train``: the same as ``python scripts/train.py`` (arguments of `facet_vlm.training`)."""
    from .training import main

    main(argv)

