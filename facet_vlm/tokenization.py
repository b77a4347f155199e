"""Moved to `facet_vlm.models.facet_vlm.tokenization_facet_vlm` (this path is an alias for one release)."""

from facet_vlm._aliases import alias_module

alias_module(__name__, "facet_vlm.models.facet_vlm.tokenization_facet_vlm")
