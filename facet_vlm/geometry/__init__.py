"""Geometry: canonical alignment, multiview rendering, point sampling, region masks and the on-disk feature cache."""

from .align import align, is_aligned
from .cache import (
    combined_features,
    multiview_features,
    point_features,
    prepare_features,
    region_mask_features,
)
from .masks import REGION_NAMES, region_masks
from .points import farthest_point_indices, sample_points
from .render import CHANNEL_SIZES, DEFAULT_VIEWS, num_channels, render_views, vertex_normals, view_rotation
from .sheet import contact_sheet

__all__ = [
    "CHANNEL_SIZES",
    "DEFAULT_VIEWS",
    "REGION_NAMES",
    "align",
    "combined_features",
    "contact_sheet",
    "farthest_point_indices",
    "is_aligned",
    "multiview_features",
    "num_channels",
    "point_features",
    "prepare_features",
    "region_mask_features",
    "region_masks",
    "render_views",
    "sample_points",
    "vertex_normals",
    "view_rotation",
]
