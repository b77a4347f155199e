"""Moved to `couple.afnet_m.modeling_afnet_m` (this path is an alias for one release)."""

from facet_vlm._aliases import alias_module

alias_module(__name__, "couple.afnet_m.modeling_afnet_m")
