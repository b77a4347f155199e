"""AFNet-M's processor: a `Face` (or a scan path) → frontal texture, depth + normals and facial-region masks.

The scan is aligned once (`facet_vlm.geometry.align`) and the frontal view (yaw 0, pitch 0) rendered; the model
normalises the pixels inside, so its Hub remote code needs no processor. Settings save and load like every processor
of the library (`facet_vlm.processing_utils`); calls return a `BatchFeature`.
"""

from __future__ import annotations

import numpy as np

from facet_vlm.errors import ConfigError
from facet_vlm.face import Face
from facet_vlm.processing_utils import FRONTAL_VIEW, FaceProcessor


class AFNetMProcessor(FaceProcessor):
    """Face → `pixel_values` (B, 3, S, S) texture, `geometry_values` (B, 4, S, S) depth + normals and
    `region_masks` (B, 4, S, S) eyes/brows/nose/mouth, all of the frontal view, for AFNet-M; with
    ``neutral_faces=`` also `neutral_pixel_values` and `neutral_geometry_values` of the neutral scans (the inputs of
    an AFNet-M with ``neutral_reference="difference"``).

    Args:
        image_size: rendered view size (the config's `image_size`).
        with_masks: compute region masks from the scan's landmarks (or the mean-face template of
            `facet_vlm.geometry.region_masks`); `False` leaves them out and the model uses its own template.
    """

    fields = ("image_size", "with_masks")
    neutral_outputs = ("pixel_values", "geometry_values")

    def __init__(self, image_size: int = 112, with_masks: bool = True):
        if image_size < 1:
            raise ConfigError(f"image_size={image_size}: must be positive")
        self.image_size = int(image_size)
        self.with_masks = bool(with_masks)

    @classmethod
    def from_config(cls, config, **overrides) -> AFNetMProcessor:
        """Settings matching an `AFNetMConfig`; `overrides` win."""
        return cls(**{"image_size": config.image_size, **overrides})

    def process_face(self, face: Face) -> dict[str, np.ndarray]:
        from facet_vlm.geometry import region_masks, render_views

        images, _ = render_views(
            face, views=FRONTAL_VIEW, size=self.image_size, channels=("texture", "depth", "normal")
        )
        arrays = {"pixel_values": images[0, :3], "geometry_values": images[0, 3:7]}
        if self.with_masks:
            arrays["region_masks"] = region_masks(face, size=self.image_size)
        return {name: value.astype(np.float32) for name, value in arrays.items()}


__all__ = ["AFNetMProcessor"]
