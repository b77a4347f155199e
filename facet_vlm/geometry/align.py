"""Canonical face frame: nose tip at the origin, eyes along +x (the subject's left), facing +z, y up.

With landmarks (the standard names of the project) the frame comes from the eyes, the mouth and the nose tip: x from
the right to the left eye centre, y from the mouth centre to the eye midpoint made orthogonal to x, z = x × y (the
normal of the eyes-mouth plane, which is the facial plane anatomists use). Without a mouth the facing direction comes
from the geometry instead. BU-3DFE's 83 unnamed ``.bnd`` points (``bnd_00``...) are used through their published
layout (:data:`BND_GROUPS`): the same eyes-mouth frame from the centres of the eye and mouth contours, the subject's
left told from right by making the nose contour protrude toward +z, and the nose tip as the most protruding vertex
near the nose contour (BU-3DFE has no nose-tip point). Without landmarks:

1. facing = the smallest principal axis of the vertices, signed by the area-weighted mean triangle normal (by the
   scan's +z when the winding is inconsistent);
2. nose tip = the most protruding point along the facing direction near the centre of the scan (each candidate scored
   by the mean height of its 16 nearest vertices, so single noise spikes do not win);
3. steps 1-2 are repeated once on the vertices within the crop radius of that nose tip (neck, hair and shoulders no
   longer tilt the axes);
4. roll = the orientation of the mirror plane through the nose tip (containing the facing direction) that makes the
   face most symmetric: mean height difference between the face's height map (rasterised, 96²) and its mirror
   image, searched within ±45° of the scan's own up direction (a coarse 3° grid, then 0.25°).

Then triangles with a vertex farther than ``crop_radius`` (mm) from the nose tip are dropped, unused vertices
removed, the winding flipped if most of the surface faces away from +z, and with ``normalize=True`` coordinates are
divided by ``crop_radius`` so the face lies in the unit ball. ``meta["align"]`` records the transform:
``canonical = scale * rotation @ (original - origin)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..errors import ConfigError, FormatError
from ..face import Face
from .raster import face_normals, pixel_grid, rasterize, to_pixels

EYE_NAMES = {"left": ("left_eye_outer", "left_eye_inner"), "right": ("right_eye_outer", "right_eye_inner")}
MOUTH_NAMES = ("mouth_left", "mouth_right", "upper_lip", "lower_lip")
#: BU-3DFE's 83-point layout (0-based, end exclusive): two eye contours of 8 points, two brows of 10, the nose (12),
#: the mouth (20), then 15 points of the face outline. Which eye is the subject's left is decided from the geometry.
BND_GROUPS: dict[str, tuple[int, int]] = {
    "eye_a": (0, 8), "eye_b": (8, 16), "brow_a": (16, 26), "brow_b": (26, 36), "nose": (36, 48), "mouth": (48, 68),
}
ROLL_SEARCH_DEGREES = 45.0
SYMMETRY_MAP_SIZE = 96


def is_aligned(face: Face) -> bool:
    """Whether the face is already in the canonical frame (it carries ``meta["align"]``)."""
    return "align" in face.meta


def bnd_groups(face: Face) -> dict[str, np.ndarray] | None:
    """The BU-3DFE point groups of :data:`BND_GROUPS` ((k, 3) each) when the face has ``bnd_00``... landmarks."""
    if face.landmarks is None or face.landmark_names is None:
        return None
    index = {name: i for i, name in enumerate(face.landmark_names)}
    groups = {}
    for group, (start, stop) in BND_GROUPS.items():
        rows = [index.get(f"bnd_{k:02d}") for k in range(start, stop)]
        if any(r is None for r in rows):
            return None
        points = face.landmarks[rows].astype(np.float64)
        if not np.all(np.isfinite(points)):
            return None
        groups[group] = points
    return groups


def _mean_landmark(face: Face, names: tuple[str, ...]) -> np.ndarray | None:
    points = [face.landmark(n) for n in names]
    points = [p.astype(np.float64) for p in points if p is not None and np.all(np.isfinite(p))]
    return np.mean(points, axis=0) if points else None


def _unit(v: np.ndarray) -> np.ndarray | None:
    length = np.linalg.norm(v)
    return v / length if length > 1e-9 else None


def _facing_direction(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Smallest principal axis of the vertices, signed toward the mean surface normal (or toward `reference`)."""
    centred = vertices - vertices.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, 0]
    normals = face_normals(vertices, faces) if len(faces) else np.zeros((1, 3))
    normal_sum, total = normals.sum(axis=0), np.linalg.norm(normals, axis=1).sum()
    cue = normal_sum if total > 0 and abs(normal_sum @ axis) > 0.2 * total else reference
    return axis if axis @ cue >= 0 else -axis


def _frame(z: np.ndarray, up_hint: np.ndarray) -> np.ndarray:
    """Rotation (rows x, y, z) with the given z and y as close as possible to `up_hint`."""
    y = _unit(up_hint - (up_hint @ z) * z)
    if y is None:
        y = _unit(np.cross(z, [1.0, 0.0, 0.0]))
    return np.stack([np.cross(y, z), y, z])


def _nose_tip(vertices: np.ndarray, rotation: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Most protruding vertex (smoothed over its 16 nearest neighbours) within `radius` of `centre` across the face."""
    local = (vertices - centre) @ rotation.T
    near = np.flatnonzero(np.hypot(local[:, 0], local[:, 1]) <= radius)
    if len(near) == 0:
        near = np.arange(len(vertices))
    candidates = near[np.argsort(local[near, 2])[-64:]]
    k = min(16, len(vertices))
    _, neighbours = cKDTree(local).query(local[candidates], k=k)
    heights = local[neighbours.reshape(len(candidates), k), 2].mean(axis=1)
    return vertices[candidates[int(np.argmax(heights))]]


def _symmetry_roll(local: np.ndarray, faces: np.ndarray, radius: float) -> float:
    """Roll angle (radians, about +z) of the most symmetric mirror plane x' = 0 of a face centred on its nose tip.

    The face is rasterised into a height map z(x, y) over [-radius, radius]²; the asymmetry of a plane with normal
    n = (cos a, sin a) is the mean |z(p) - z(p - 2 (p.n) n)| over the covered pixels (bilinear lookup), counting a
    mirror image that falls off the face as a capped difference.
    """
    size = SYMMETRY_MAP_SIZE
    px, py = to_pixels(local, size, radius)
    zbuf = np.full((size, size), -np.inf)
    rasterize(px, py, np.ascontiguousarray(local[:, 2]), faces, size, zbuf, np.full((size, size), -1, np.int64),
               np.zeros((size, size, 2)))
    covered = np.isfinite(zbuf)
    if covered.sum() < 16:
        return 0.0
    cap = 0.1 * radius
    x, y = pixel_grid(size, radius)
    points = np.stack([x[covered], y[covered]], axis=1)
    heights = zbuf[covered]
    padded = np.pad(np.where(covered, zbuf, np.nan), 1, constant_values=np.nan)

    def asymmetry(angle: float) -> float:
        normal = np.array([np.cos(angle), np.sin(angle)])
        mirrored = points - 2.0 * (points @ normal)[:, None] * normal
        col, row = to_pixels(mirrored, size, radius)
        col, row = np.clip(col - 0.5, -1.0, size), np.clip(row - 0.5, -1.0, size)
        c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
        fc, fr = col - c0, row - r0
        c0, r0 = c0 + 1, r0 + 1
        c1, r1 = np.minimum(c0 + 1, size + 1), np.minimum(r0 + 1, size + 1)
        top = padded[r0, c0] * (1.0 - fc) + padded[r0, c1] * fc
        bottom = padded[r1, c0] * (1.0 - fc) + padded[r1, c1] * fc
        difference = np.abs(top * (1.0 - fr) + bottom * fr - heights)
        return float(np.where(np.isnan(difference), cap, np.minimum(difference, cap)).mean())

    limit = np.radians(ROLL_SEARCH_DEGREES)
    coarse = np.arange(-limit, limit + 1e-9, np.radians(3.0))
    best = coarse[int(np.argmin([asymmetry(a) for a in coarse]))]
    fine = best + np.radians(np.arange(-3.0, 3.01, 0.25))
    return float(fine[int(np.argmin([asymmetry(a) for a in fine]))])


def _frame_from_landmarks(face: Face, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    nose = face.landmark("nose_tip")
    left, right = _mean_landmark(face, EYE_NAMES["left"]), _mean_landmark(face, EYE_NAMES["right"])
    if nose is None or left is None or right is None or not np.all(np.isfinite(nose)):
        return None
    x = _unit(left - right)
    if x is None:
        return None
    nose = nose.astype(np.float64)
    eye_mid = 0.5 * (left + right)
    mouth = _mean_landmark(face, MOUTH_NAMES)
    z = None
    if mouth is not None:
        up = eye_mid - mouth
        z = _unit(np.cross(x, up - (up @ x) * x))
    if z is None:
        z = _facing_direction(vertices, face.faces, np.array([0.0, 0.0, 1.0]))
        z = _unit(z - (z @ x) * x)
        if z is None:
            return None
    return np.stack([x, np.cross(z, x), z]), nose


def _frame_from_bnd(face: Face, vertices: np.ndarray, crop_radius: float) -> tuple[np.ndarray, np.ndarray] | None:
    groups = bnd_groups(face)
    if groups is None:
        return None
    eye_a, eye_b = groups["eye_a"].mean(axis=0), groups["eye_b"].mean(axis=0)
    eye_mid, nose = 0.5 * (eye_a + eye_b), groups["nose"].mean(axis=0)
    x = _unit(eye_a - eye_b)
    if x is None:
        return None
    up = eye_mid - groups["mouth"].mean(axis=0)
    z = _unit(np.cross(x, up - (up @ x) * x))
    if z is None:
        return None
    if (nose - eye_mid) @ z < 0:
        x, z = -x, -z
    rotation = np.stack([x, np.cross(z, x), z])
    return rotation, _nose_tip(vertices, rotation, nose, 0.25 * crop_radius)


def _frame_from_geometry(face: Face, vertices: np.ndarray, crop_radius: float) -> tuple[np.ndarray, np.ndarray]:
    up_hint = np.array([0.0, 1.0, 0.0])
    z = _facing_direction(vertices, face.faces, np.array([0.0, 0.0, 1.0]))
    rotation = _frame(z, up_hint)
    centre = vertices.mean(axis=0)
    radial = np.linalg.norm((vertices - centre) @ rotation[:2].T, axis=1)
    nose = _nose_tip(vertices, rotation, centre, 0.4 * np.percentile(radial, 95))

    keep = np.linalg.norm(vertices - nose, axis=1) <= crop_radius
    used = np.zeros(len(vertices), bool)
    used[face.faces[np.all(keep[face.faces], axis=1)].reshape(-1)] = True
    if used.sum() >= 10:
        local_faces = face.faces[np.all(used[face.faces], axis=1)]
        z = _facing_direction(vertices[used], np.searchsorted(np.flatnonzero(used), local_faces), z)
        rotation = _frame(z, up_hint)
        nose = _nose_tip(vertices[used], rotation, nose, 0.3 * crop_radius)
    keep = np.linalg.norm(vertices - nose, axis=1) <= crop_radius
    roll = _symmetry_roll((vertices - nose) @ rotation.T, face.faces[np.all(keep[face.faces], axis=1)], crop_radius)
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) @ rotation, nose


def _crop(face: Face, canonical: np.ndarray, radius: float, scale: float) -> tuple[Face, bool]:
    """Keep the triangles within `radius` of the origin, drop unused vertices, scale, and make the surface face +z."""
    inside = np.linalg.norm(canonical, axis=1) <= radius
    faces = face.faces[np.all(inside[face.faces], axis=1)]
    if len(faces) == 0:
        raise FormatError(
            f"no triangle lies within {radius:g} of the nose tip; is the scan in millimetres (it spans "
            f"{np.ptp(face.vertices, axis=0).round(1).tolist()})? Pass a larger crop_radius otherwise.",
            face.meta.get("path"),
        )
    used = np.unique(faces)
    new_faces = np.searchsorted(used, faces)
    vertices = canonical[used] * scale
    flipped = bool(face_normals(vertices, new_faces)[:, 2].sum() < 0)
    if flipped:
        new_faces = new_faces[:, [0, 2, 1]]
    cropped = face.copy(
        vertices=vertices.astype(np.float32),
        faces=new_faces,
        uv=None if face.uv is None else face.uv[used],
        colors=None if face.colors is None else face.colors[used],
    )
    return cropped, flipped


def align(face: Face, crop_radius: float = 90.0, normalize: bool = True) -> Face:
    """Put a scan into the canonical face frame, crop it around the nose tip and optionally scale it to the unit ball.

    Args:
        face: a scan in millimetres, with or without landmarks. A face that is already aligned (has
            ``meta["align"]``) is returned unchanged.
        crop_radius: keep the triangles whose three vertices lie within this distance (mm) of the nose tip.
        normalize: divide coordinates by ``crop_radius`` (the face then lies in the unit ball).

    Returns:
        A new Face (uv, colours, texture and landmarks carried along) with ``meta["align"]`` = {"method":
        "landmarks" | "bnd" | "geometry", "rotation" (3x3, rows = canonical axes), "origin" (the nose tip in scan
        coordinates), "scale", "crop_radius", "normalized", "extent" (half-width of the view window: 1 when
        normalised, else crop_radius), "flipped_winding"}.
    """
    if is_aligned(face):
        return face
    if not crop_radius > 0:
        raise ConfigError(f"crop_radius={crop_radius}: must be a positive distance in millimetres")
    if face.num_vertices < 3 or face.num_faces == 0:
        raise FormatError(f"cannot align a mesh with {face.num_vertices} vertices and {face.num_faces} triangles",
                          face.meta.get("path"))
    vertices = face.vertices.astype(np.float64)
    if not np.all(np.isfinite(vertices)):
        raise FormatError("vertices contain NaN or infinite coordinates", face.meta.get("path"))

    found, method = _frame_from_landmarks(face, vertices), "landmarks"
    if found is None:
        found, method = _frame_from_bnd(face, vertices, crop_radius), "bnd"
    if found is None:
        found, method = _frame_from_geometry(face, vertices, crop_radius), "geometry"
    rotation, origin = found
    scale = 1.0 / crop_radius if normalize else 1.0
    aligned, flipped = _crop(face, (vertices - origin) @ rotation.T, crop_radius, scale)
    if face.landmarks is not None:
        aligned.landmarks = ((face.landmarks.astype(np.float64) - origin) @ rotation.T * scale).astype(np.float32)
    record: dict[str, Any] = {
        "method": method,
        "rotation": rotation.tolist(),
        "origin": origin.tolist(),
        "scale": scale,
        "crop_radius": float(crop_radius),
        "normalized": bool(normalize),
        "extent": 1.0 if normalize else float(crop_radius),
        "flipped_winding": flipped,
    }
    aligned.meta["align"] = record
    return aligned
