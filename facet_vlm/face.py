"""The `Face` record every reader returns and every geometry function takes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Face:
    """One 3D face scan.

    Attributes:
        vertices: float32 (N, 3), in the scan's own units (millimetres for BU-3DFE, Bosphorus and generated scans).
        faces: int64 (M, 3) triangle vertex indices (polygons are triangulated by the readers).
        uv: float32 (N, 2) per-vertex texture coordinates in [0, 1], origin at the bottom-left of the image
            (VRML convention), or None. Readers split vertices at uv seams so that uv are truly per vertex.
        texture: uint8 (H, W, 3) texture image, row 0 at the top, or None.
        colors: uint8 (N, 3) per-vertex colours, or None.
        landmarks: float32 (L, 3) landmark positions, or None.
        landmark_names: L names, one per landmark row (``"bnd_00"``.. for BU-3DFE .bnd points, or ``"nose_tip"``...).
        meta: free-form metadata: ``path``, ``subject``, ``expression``, ``intensity``, ``format``, ...
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    colors: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    landmark_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if self.uv is not None:
            self.uv = np.ascontiguousarray(self.uv, dtype=np.float32).reshape(-1, 2)
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if self.landmarks is not None:
            self.landmarks = np.ascontiguousarray(self.landmarks, dtype=np.float32).reshape(-1, 3)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def landmark(self, name: str) -> np.ndarray | None:
        """Position of the landmark called `name`, or None when the scan does not have it."""
        if self.landmarks is None or self.landmark_names is None or name not in self.landmark_names:
            return None
        return self.landmarks[self.landmark_names.index(name)]

    def copy(self, **changes: Any) -> Face:
        """A shallow copy with some fields replaced (arrays are shared unless replaced)."""
        return replace(self, meta=dict(self.meta), **changes)

    def __repr__(self) -> str:
        parts = [f"vertices={self.num_vertices}", f"faces={self.num_faces}"]
        if self.uv is not None:
            parts.append("uv")
        if self.texture is not None:
            parts.append(f"texture={self.texture.shape[1]}x{self.texture.shape[0]}")
        if self.colors is not None:
            parts.append("colors")
        if self.landmarks is not None:
            parts.append(f"landmarks={len(self.landmarks)}")
        if "path" in self.meta:
            parts.append(f"path={self.meta['path']!r}")
        return f"Face({', '.join(parts)})"
