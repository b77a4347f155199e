"""CoupleFER's processor: a `Face` (or a scan path) → the frontal texture and a point cloud.

The scan is aligned once (`facet_vlm.geometry.align`) and the frontal view (yaw 0, pitch 0) rendered. Pixel values
stay RGB in [0, 1]: the model normalises them inside (config `normalize_pixels`), so its Hub remote code needs no
processor. `facet_vlm.geometry` is imported inside the methods so that importing this module stays cheap. Settings
save and load like every processor of the library (`facet_vlm.processing_utils`), also through
`AutoProcessor.from_pretrained(model_folder)`; calls return a `BatchFeature`.
"""

from __future__ import annotations

import numpy as np

from facet_vlm.errors import ConfigError, MissingTextureError
from facet_vlm.face import Face
from facet_vlm.processing_utils import FRONTAL_VIEW, FaceProcessor


class CoupleFERProcessor(FaceProcessor):
    """Face → `pixel_values` (B, 3, S, S) frontal texture in [0, 1] and `points` (B, N, 6 or 9) for CoupleFER.

    With ``neutral_faces=`` (one neutral scan of the same person per face) also `neutral_pixel_values` and
    `neutral_point_offsets` (B, N), the inputs of a CoupleFER with ``neutral_reference="difference"``.

    Args:
        image_size: rendered view size (the CLIP vision config's `image_size`).
        num_points: points sampled over the surface (at least the model's `num_point_groups` and
            `point_group_size`); 2048 covers 128 patches of 32 points twice.
        point_channels: 6 (xyz + normal) or 9 (+ rgb in [0, 1]; needs a textured or coloured scan).
        seed: seed of the surface sampling (same seed, same points).
        point_regions: sample the points only over these facial regions (names of
            `facet_vlm.geometry.REGION_NAMES`: eyes, brows, nose, mouth), each within `point_region_margin` of its
            ellipse (`facet_vlm.geometry.sample_points`): a crop of the expressive regions for the point branch,
            the same number of points at a higher density there. ``None`` (default): the whole face. The texture
            view is not cropped.
        point_region_margin: how far beyond the regions' ellipses the crop reaches (aligned units, 0.1 = 9 mm).
    """

    fields = ("image_size", "num_points", "point_channels", "seed", "point_regions", "point_region_margin")

    def __init__(self, image_size: int = 224, num_points: int = 2048, point_channels: int = 6, seed: int = 0,
                 point_regions: list[str] | tuple[str, ...] | None = None, point_region_margin: float = 0.1):
        from facet_vlm.geometry.masks import check_regions

        if point_regions is not None:
            check_regions(point_regions, "point_regions")
        if not point_region_margin > 0:
            raise ConfigError(f"point_region_margin={point_region_margin}: must be positive")
        if point_channels not in (6, 9):
            raise ConfigError(f"point_channels={point_channels}: use 6 (xyz + normal) or 9 (xyz + normal + rgb)")
        if image_size < 1 or num_points < 1:
            raise ConfigError(f"image_size={image_size}, num_points={num_points}: both must be positive")
        self.image_size = int(image_size)
        self.num_points = int(num_points)
        self.point_channels = int(point_channels)
        self.seed = int(seed)
        self.point_regions = None if point_regions is None else list(point_regions)
        self.point_region_margin = float(point_region_margin)

    @classmethod
    def from_config(cls, config, **overrides) -> CoupleFERProcessor:
        """Settings matching a `CoupleFERConfig` (image size and point features); `overrides` win."""
        settings = {
            "image_size": config.vision_config.image_size,
            "point_channels": config.point_input_dim,
            "num_points": max(2048, config.num_point_groups, config.point_group_size),
        }
        return cls(**{**settings, **overrides})

    #: With ``neutral_faces``: the neutral scan's texture (``neutral_pixel_values``); `process_pair` adds
    #: ``neutral_point_offsets``.
    neutral_outputs = ("pixel_values",)

    def render_texture(self, face: Face) -> np.ndarray:
        """The frontal texture view (3, S, S) in [0, 1]."""
        from facet_vlm.geometry import render_views

        images, _ = render_views(face, views=FRONTAL_VIEW, size=self.image_size, channels=("texture",))
        return images[0].astype(np.float32)

    def process_pair(self, face: Face, reference: Face) -> dict[str, np.ndarray]:
        """A scan and its neutral scan (both in the neutral scan's frame): the scan's inputs, the neutral scan's
        texture view (``neutral_pixel_values``) and, for each of the scan's points, its signed distance from the
        neutral surface (``neutral_point_offsets`` (N,), aligned units; `facet_vlm.geometry.surface_offsets`):
        how far the face moved out of or into itself there. Sampled clouds of two scans share no points, so the
        motion is measured against the neutral mesh, not its cloud."""
        from facet_vlm.geometry import surface_offsets

        arrays = self.process_face(face)
        arrays["neutral_pixel_values"] = self.render_texture(reference)
        arrays["neutral_point_offsets"] = surface_offsets(arrays["points"], reference)
        return arrays

    def process_face(self, face: Face) -> dict[str, np.ndarray]:
        from facet_vlm.geometry import sample_points

        points = sample_points(face, n=self.num_points, seed=self.seed, regions=self.point_regions,
                               region_margin=self.point_region_margin)
        if points.shape[1] < self.point_channels:
            raise MissingTextureError(
                "point_channels=9 needs point colours but the scan has no texture or vertex colours; "
                "use point_channels=6",
                face.meta.get("path"),
            )
        return {
            "pixel_values": self.render_texture(face),
            "points": points[:, : self.point_channels].astype(np.float32),
        }


__all__ = ["CoupleFERProcessor"]
