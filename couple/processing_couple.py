"""Moved: `CoupleFERProcessor` to `couple.couplefer.processing_couplefer`, `AFNetMProcessor` to
`couple.afnet_m.processing_afnet_m` (this path is an alias for one release)."""

import warnings

from couple.afnet_m.processing_afnet_m import AFNetMProcessor
from couple.couplefer.processing_couplefer import CoupleFERProcessor

warnings.warn("couple.processing_couple was split into couple.couplefer.processing_couplefer and "
              "couple.afnet_m.processing_afnet_m; the old path is removed in facet-vlm 0.3", FutureWarning,
              stacklevel=2)

__all__ = ["AFNetMProcessor", "CoupleFERProcessor"]
