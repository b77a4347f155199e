"""Geometry: canonical alignment, multiview rendering, point sampling and region masks.

The on-disk feature cache moved to `facet_vlm.data.cache` (it reads data sets; geometry does not); its names are
still reachable here, with a `FutureWarning`, for one release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .align import align, is_aligned
from .masks import REGION_NAMES, region_masks, region_weights
from .points import farthest_point_indices, sample_points, surface_offsets
from .render import CHANNEL_SIZES, DEFAULT_VIEWS, num_channels, render_views, vertex_normals, view_rotation
from .sheet import contact_sheet

#: Names that moved to `facet_vlm.data.cache` (aliases for one release).
_MOVED_TO_DATA_CACHE = ("combined_features", "multiview_features", "point_features", "prepare_features",
                        "region_mask_features")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_DATA_CACHE:
        warnings.warn(f"facet_vlm.geometry.{name} moved to facet_vlm.data.cache.{name}; the old name is removed in "
                      "facet-vlm 0.3", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module("facet_vlm.data.cache"), name)
    raise AttributeError(f"module 'facet_vlm.geometry' has no attribute {name!r}")


__all__ = [
    "CHANNEL_SIZES",
    "DEFAULT_VIEWS",
    "REGION_NAMES",
    "align",
    "contact_sheet",
    "farthest_point_indices",
    "is_aligned",
    "num_channels",
    "region_masks",
    "region_weights",
    "render_views",
    "sample_points",
    "surface_offsets",
    "vertex_normals",
    "view_rotation",
]
