"""Processors of CoupleFER and AFNet-M: a `Face` (or a scan path) → the model's input tensors.

Both align the scan once (`facet_vlm.geometry.align`) and render the frontal view (yaw 0, pitch 0). Pixel values
stay RGB in [0, 1]: the models normalise them inside (config `normalize_pixels`), so their Hub remote code needs no
processor. `facet_vlm.io` and `facet_vlm.geometry` are imported inside the methods so that importing this module
stays cheap. Settings save and load like every processor of the library (`facet_vlm.processing_utils`), also through
`AutoProcessor.from_pretrained(model_folder)`; calls return a `BatchFeature`.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
from transformers import BatchFeature

from facet_vlm.errors import ConfigError, MissingTextureError
from facet_vlm.face import Face
from facet_vlm.processing_utils import SettingsProcessor

FaceLike = Face | str | PathLike
FRONTAL_VIEW = ((0.0, 0.0),)


class _FaceProcessor(SettingsProcessor):
    """Shared plumbing: load faces, stack per-face arrays into a `BatchFeature`; settings I/O from the base."""

    @staticmethod
    def load_face(face: FaceLike) -> Face:
        """A `Face` as is, or read from a scan path with `facet_vlm.io.read_face`, then aligned."""
        from facet_vlm.geometry import align, is_aligned

        if not isinstance(face, Face):
            from facet_vlm.io import read_face

            face = read_face(face)
        return face if is_aligned(face) else align(face)

    def process_face(self, face: Face) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(
        self,
        faces: FaceLike | Sequence[FaceLike],
        labels: int | Sequence[int] | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Process one face or a list of faces (or paths) into a batch; `labels` are added as `labels` if given."""
        single = isinstance(faces, (Face, str, PathLike))
        faces = [faces] if single else list(faces)
        if not faces:
            raise ConfigError(f"{type(self).__name__}: no faces given")
        arrays = [self.process_face(self.load_face(face)) for face in faces]
        data = {name: np.stack([item[name] for item in arrays]) for name in arrays[0]}
        if labels is not None:
            labels = [labels] if np.isscalar(labels) else list(labels)
            if len(labels) != len(faces):
                raise ConfigError(f"{len(labels)} labels for {len(faces)} faces")
            data["labels"] = np.asarray(labels, dtype=np.int64)
        return BatchFeature(data=data, tensor_type=return_tensors)


class CoupleFERProcessor(_FaceProcessor):
    """Face → `pixel_values` (B, 3, S, S) frontal texture in [0, 1] and `points` (B, N, 6 or 9) for CoupleFER.

    Args:
        image_size: rendered view size (the CLIP vision config's `image_size`).
        num_points: points sampled over the surface (at least the model's `num_point_groups` and
            `point_group_size`); 2048 covers 128 patches of 32 points twice.
        point_channels: 6 (xyz + normal) or 9 (+ rgb in [0, 1]; needs a textured or coloured scan).
        seed: seed of the surface sampling (same seed, same points).
    """

    fields = ("image_size", "num_points", "point_channels", "seed")

    def __init__(self, image_size: int = 224, num_points: int = 2048, point_channels: int = 6, seed: int = 0):
        if point_channels not in (6, 9):
            raise ConfigError(f"point_channels={point_channels}: use 6 (xyz + normal) or 9 (xyz + normal + rgb)")
        if image_size < 1 or num_points < 1:
            raise ConfigError(f"image_size={image_size}, num_points={num_points}: both must be positive")
        self.image_size = int(image_size)
        self.num_points = int(num_points)
        self.point_channels = int(point_channels)
        self.seed = int(seed)

    @classmethod
    def from_config(cls, config, **overrides) -> CoupleFERProcessor:
        """Settings matching a `CoupleFERConfig` (image size and point features); `overrides` win."""
        settings = {
            "image_size": config.vision_config.image_size,
            "point_channels": config.point_input_dim,
            "num_points": max(2048, config.num_point_groups, config.point_group_size),
        }
        return cls(**{**settings, **overrides})

    def process_face(self, face: Face) -> dict[str, np.ndarray]:
        from facet_vlm.geometry import render_views, sample_points

        images, _ = render_views(face, views=FRONTAL_VIEW, size=self.image_size, channels=("texture",))
        points = sample_points(face, n=self.num_points, seed=self.seed)
        if points.shape[1] < self.point_channels:
            raise MissingTextureError(
                "point_channels=9 needs point colours but the scan has no texture or vertex colours; "
                "use point_channels=6",
                face.meta.get("path"),
            )
        return {
            "pixel_values": images[0].astype(np.float32),
            "points": points[:, : self.point_channels].astype(np.float32),
        }


class AFNetMProcessor(_FaceProcessor):
    """Face → `pixel_values` (B, 3, S, S) texture, `geometry_values` (B, 4, S, S) depth + normals and
    `region_masks` (B, 4, S, S) eyes/brows/nose/mouth, all of the frontal view, for AFNet-M.

    Args:
        image_size: rendered view size (the config's `image_size`).
        with_masks: compute region masks from the scan's landmarks (or the mean-face template of
            `facet_vlm.geometry.region_masks`); `False` leaves them out and the model uses its own template.
    """

    fields = ("image_size", "with_masks")

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


__all__ = ["AFNetMProcessor", "CoupleFERProcessor"]
