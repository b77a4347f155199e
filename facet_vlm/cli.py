"""Console entry points declared in pyproject.toml."""

from __future__ import annotations

from collections.abc import Sequence


def train_main(argv: Sequence[str] | None = None) -> None:
    """``facet-vlm-train``: the same as ``python scripts/train.py`` (arguments of `facet_vlm.training`)."""
    from .training import main

    main(argv)


def prepare_main(argv: Sequence[str] | None = None) -> None:
    """``facet-vlm-prepare``: generate or index a data set and fill the render cache (`facet_vlm.prepare`)."""
    from .prepare import main

    raise SystemExit(main(None if argv is None else list(argv)))
