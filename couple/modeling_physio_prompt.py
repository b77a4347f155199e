"""Moved to `couple.physio_prompt.modeling_physio_prompt` (this path is an alias for one release)."""

from facet_vlm._aliases import alias_module

alias_module(__name__, "couple.physio_prompt.modeling_physio_prompt")
