"""Test-time perturbations of a 3D face scan, for robustness curves (`facet_vlm.benchmark`).

Each function takes a `Face` in its own units (millimetres for BU-3DFE, Bosphorus and generated scans), returns a
perturbed copy (the input is not changed) and is deterministic for a given ``seed``. They act on the raw mesh before
alignment and rendering, i.e. they model a worse scanner or pose, not an augmentation of cached renders (that is
`facet_vlm.geometry.augment`, training time).

Choices (the sources leave them open; each is an argument):

* `depth_noise`: Gaussian noise of σ mm along the scan's z axis (the range scanner's viewing direction in the
  BU-3DFE, Bosphorus and generated layouts), independent per vertex.
* `holes`: ``num_holes`` roughly round holes, centred on random triangles; triangles are removed nearest-to-a-centre
  first until the removed triangle area reaches ``share`` of the surface area (it overshoots by less than one
  triangle). Unused vertices are dropped.
* `rotate`: rotation by θ degrees about an axis through the mean vertex (``axis="y"``: yaw, the head turning).
  Landmarks are rotated with the surface.
* `decimate`: keeps ``round(keep * N)`` vertices chosen at random and re-triangulates them by a Delaunay
  triangulation of their (x, y) positions (the scans are range images seen along z); a new triangle whose (x, y)
  centre lies farther than ``max_edge_factor`` × the longest original edge from every original triangle centre is
  dropped, so that the convex hull does not bridge the face's concave outline or its holes.
* `missing_texture`: texture, uv and vertex colours removed (the renderer then draws a constant grey).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..face import Face

__all__ = ["PERTURBATIONS", "decimate", "depth_noise", "holes", "missing_texture", "perturb", "rotate",
           "surface_area", "triangle_areas"]


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of every triangle (units²)."""
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def surface_area(face: Face) -> float:
    """Total triangle area of a scan (units²)."""
    return float(triangle_areas(face.vertices, face.faces).sum())


def _keep_vertices(face: Face, keep: np.ndarray, faces: np.ndarray) -> Face:
    """A copy with only the vertices `keep` (bool mask) and `faces` (old indices) remapped."""
    new_index = np.full(face.num_vertices, -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    return face.copy(vertices=face.vertices[keep], faces=new_index[faces],
                     uv=None if face.uv is None else face.uv[keep],
                     colors=None if face.colors is None else face.colors[keep])


def depth_noise(face: Face, sigma: float, seed: int = 0) -> Face:
    """Add N(0, σ²) noise (σ in the scan's units, mm) to every vertex's z."""
    if sigma < 0:
        raise ConfigError(f"depth_noise: sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    vertices = face.vertices.copy()
    vertices[:, 2] += rng.normal(0.0, sigma, len(vertices)).astype(np.float32)
    return face.copy(vertices=vertices)


def holes(face: Face, share: float, seed: int = 0, num_holes: int = 3) -> Face:
    """Remove about `share` (0..1) of the surface area as `num_holes` holes; see the module doc."""
    if not 0 <= share < 1:
        raise ConfigError(f"holes: share must be in [0, 1), got {share}")
    if num_holes < 1:
        raise ConfigError(f"holes: num_holes must be >= 1, got {num_holes}")
    if share == 0 or face.num_faces == 0:
        return face.copy()
    areas = triangle_areas(face.vertices, face.faces)
    centroids = face.vertices[face.faces].mean(axis=1).astype(np.float64)
    rng = np.random.default_rng(seed)
    centres = centroids[rng.choice(len(centroids), size=min(num_holes, len(centroids)), replace=False)]
    distance = np.min(np.linalg.norm(centroids[:, None, :] - centres[None, :, :], axis=2), axis=1)
    order = np.argsort(distance, kind="stable")
    removed_area = np.cumsum(areas[order])
    count = int(np.searchsorted(removed_area, share * areas.sum(), side="left")) + 1
    kept_faces = np.ones(face.num_faces, dtype=bool)
    kept_faces[order[:count]] = False
    faces = face.faces[kept_faces]
    used = np.zeros(face.num_vertices, dtype=bool)
    used[faces.reshape(-1)] = True
    return _keep_vertices(face, used, faces)


def rotation_matrix(degrees: float, axis: str = "y") -> np.ndarray:
    """3×3 right-handed rotation by `degrees` about the x, y or z axis."""
    if axis not in ("x", "y", "z"):
        raise ConfigError(f"rotate: axis must be x, y or z, got {axis!r}")
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def rotate(face: Face, degrees: float, axis: str = "y") -> Face:
    """Rotate the scan (and its landmarks) by `degrees` about `axis` through the mean vertex."""
    rotation = rotation_matrix(degrees, axis)
    centre = face.vertices.astype(np.float64).mean(axis=0)

    def turn(points: np.ndarray) -> np.ndarray:
        return ((points.astype(np.float64) - centre) @ rotation.T + centre).astype(np.float32)

    return face.copy(vertices=turn(face.vertices),
                     landmarks=None if face.landmarks is None else turn(face.landmarks))


def decimate(face: Face, keep: float, seed: int = 0, max_edge_factor: float = 1.0) -> Face:
    """Keep ``round(keep * N)`` random vertices, re-triangulated in (x, y); see the module doc."""
    from scipy.spatial import Delaunay, cKDTree

    if not 0 < keep <= 1:
        raise ConfigError(f"decimate: keep must be in (0, 1], got {keep}")
    if keep == 1:
        return face.copy()
    count = max(3, int(round(keep * face.num_vertices)))
    rng = np.random.default_rng(seed)
    chosen = np.zeros(face.num_vertices, dtype=bool)
    chosen[rng.choice(face.num_vertices, size=count, replace=False)] = True
    points = face.vertices[chosen]
    triangles = Delaunay(points[:, :2].astype(np.float64)).simplices.astype(np.int64)
    if face.num_faces:
        # Drop triangles that bridge a concave outline or a hole: their centre is not over the original surface.
        corners = face.vertices[face.faces][..., :2].astype(np.float64)
        longest = float(np.linalg.norm(corners[:, [1, 2, 0]] - corners, axis=-1).max())
        distance, _ = cKDTree(corners.mean(axis=1)).query(points[triangles][..., :2].mean(axis=1))
        triangles = triangles[distance <= max_edge_factor * longest]
    original_index = np.flatnonzero(chosen)
    return _keep_vertices(face, chosen, original_index[triangles])


def missing_texture(face: Face, strength: float = 1.0) -> Face:
    """Drop texture, uv and vertex colours (`strength` is ignored: the texture is there or not)."""
    return face.copy(texture=None, uv=None, colors=None)


#: Perturbation name → function(face, strength, seed) and the unit of its strength (report axis labels).
PERTURBATIONS: dict[str, tuple[Callable[..., Face], str]] = {
    "depth_noise": (lambda face, s, seed: depth_noise(face, s, seed), "σ (mm)"),
    "holes": (lambda face, s, seed: holes(face, s, seed), "share of surface removed"),
    "rotation": (lambda face, s, seed: rotate(face, s), "yaw (degrees)"),
    "decimation": (lambda face, s, seed: decimate(face, s, seed), "share of vertices kept"),
    "missing_texture": (lambda face, s, seed: missing_texture(face) if s else face.copy(),
                        "texture removed (1) or not (0)"),
}


def perturb(face: Face, name: str, strength: float, seed: int = 0) -> Face:
    """Apply the perturbation called `name` (a key of `PERTURBATIONS`) at `strength`."""
    if name not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {name!r}; choose one of {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name][0](face, strength, seed)
