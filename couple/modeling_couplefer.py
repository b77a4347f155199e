"""Moved to `couple.couplefer.modeling_couplefer` (this path is an alias for one release)."""

from facet_vlm._aliases import alias_module

alias_module(__name__, "couple.couplefer.modeling_couplefer")
