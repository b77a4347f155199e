"""Moved to `facet_vlm.benchmarks.comparison` (this path is an alias for one release)."""

from facet_vlm._aliases import alias_module

alias_module(__name__, "facet_vlm.benchmarks.comparison")
