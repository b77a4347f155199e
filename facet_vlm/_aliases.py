"""Old module paths kept for one release: each old module is replaced by the module that now holds its code.

The model files moved into one folder per model (``facet_vlm/models/facet_vlm/``, ``couple/<name>/``); importing an
old path (``facet_vlm.modeling_facet_vlm``, ``couple.processing_couple``, ...) gives the new module itself (the same
classes, so ``isinstance`` and saved models are unaffected) with a `FutureWarning` naming the new path.
"""

from __future__ import annotations

import importlib
import sys
import warnings

#: Release after which the old paths are removed.
REMOVED_IN = "0.3"


def alias_module(old: str, new: str) -> None:
    """Make the module being imported as `old` the module `new` (call it from the old module's file)."""
    warnings.warn(f"{old} moved to {new}; the old path is removed in facet-vlm {REMOVED_IN}", FutureWarning,
                  stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
