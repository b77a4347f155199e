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

import math
from typing import Any

import numpy as np
from numba import njit
from scipy.spatial import cKDTree

from ..errors import ConfigError, FormatError
from ..face import Face
from .motion import STABLE_POINTS, rigid_fit
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


def _lengths(rows: np.ndarray) -> np.ndarray:
    """Euclidean length of every row of a (N, 2 or 3) array: ``np.linalg.norm(rows, axis=1)`` with the same sums in
    the same order (so the same bits), ten times faster."""
    squares = rows[:, 0] * rows[:, 0]
    for column in range(1, rows.shape[1]):
        squares += rows[:, column] * rows[:, column]
    return np.sqrt(squares)


def _facing_direction(vertices: np.ndarray, normals: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Smallest principal axis of the vertices, signed toward the mean surface normal (or toward `reference`).

    `normals` are the (unnormalised) triangle normals of the mesh (:func:`face_normals`)."""
    centred = vertices - vertices.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, 0]
    normals = normals if len(normals) else np.zeros((1, 3))
    normal_sum, total = normals.sum(axis=0), _lengths(normals).sum()
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
    heights = local[_nearest(local, candidates, min(16, len(vertices))), 2].mean(axis=1)
    return vertices[candidates[int(np.argmax(heights))]]


def _nearest(points: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices (len(rows), k) of the k points nearest to each of `points[rows]` (a k-d tree query over all points).

    Only the points whose (x, y) lie within a margin of the queries' bounding box go into the tree; the margin starts
    at about twice the k-th neighbour distance expected from the queries' own spacing and doubles until every
    query's k-th neighbour is nearer than the margin. Points outside the box are farther than the margin, so the
    answer is that of a tree over all points, for a fraction of the cost of building one.
    """
    queries = points[rows]
    low, high = queries[:, :2].min(axis=0), queries[:, :2].max(axis=0)
    spacing = np.sqrt(np.prod(high - low) / len(rows))
    margin = 2.5 * spacing if spacing > 0 else 1e-3 * float(np.ptp(points[:, :2]) + 1e-12)
    xy = points[:, :2]
    while True:
        box = (xy[:, 0] >= low[0] - margin) & (xy[:, 0] <= high[0] + margin)
        box &= (xy[:, 1] >= low[1] - margin) & (xy[:, 1] <= high[1] + margin)
        inside = np.flatnonzero(box)
        if len(inside) >= k:
            distance, index = cKDTree(points[inside]).query(queries, k=k)
            if len(inside) == len(points) or np.max(distance) <= margin:
                return inside[np.reshape(index, (len(rows), k))]
        margin *= 2.0


@njit(cache=True)
def _least_asymmetric(x, y, heights, padded, angles, order, size, radius, cap):
    """Index of the mirror-plane angle with the least asymmetry (``np.argmin`` of the scores: the lowest index wins
    a tie).

    The asymmetry of the plane with normal n = (cos a, sin a) is the mean capped |z(p) - z(p - 2 (p.n) n)| over the
    covered pixels (x, y, heights); the mirrored height is looked up bilinearly in `padded` (the height map with a
    one-pixel NaN border, NaN where no triangle covers it) and a NaN difference (the mirror falls off the face)
    counts as `cap`. Angles are scored in `order` (the likeliest first); since every term is non-negative, the sum
    of an angle stops as soon as it exceeds the best complete sum, which skips most of the work for the angles far
    from the answer without changing it.
    """
    scale = 0.5 * size / radius
    count = x.shape[0]
    best, best_score = -1, np.inf
    for a in order:
        nx = math.cos(angles[a])
        ny = math.sin(angles[a])
        limit = best_score * count * (1.0 + 1e-9)
        total = 0.0
        for p in range(count):
            twice = 2.0 * (x[p] * nx + y[p] * ny)
            col = min(max((x[p] - twice * nx + radius) * scale - 0.5, -1.0), size)
            row = min(max((radius - (y[p] - twice * ny)) * scale - 0.5, -1.0), size)
            c0 = math.floor(col)
            r0 = math.floor(row)
            fc = col - c0
            fr = row - r0
            c0 = int(c0) + 1
            r0 = int(r0) + 1
            c1 = min(c0 + 1, size + 1)
            r1 = min(r0 + 1, size + 1)
            top = padded[r0, c0] * (1.0 - fc) + padded[r0, c1] * fc
            bottom = padded[r1, c0] * (1.0 - fc) + padded[r1, c1] * fc
            difference = abs(top * (1.0 - fr) + bottom * fr - heights[p])
            total += cap if math.isnan(difference) else min(difference, cap)
            if total > limit:
                break
        score = total / count
        if score < best_score or (score == best_score and a < best):
            best, best_score = a, score
    return best


def _height_map(local: np.ndarray, faces: np.ndarray, radius: float) -> np.ndarray:
    """The face's height z(x, y) rasterised over [-radius, radius]² (SYMMETRY_MAP_SIZE², -inf where uncovered)."""
    size = SYMMETRY_MAP_SIZE
    px, py = to_pixels(local, size, radius)
    zbuf = np.full((size, size), -np.inf)
    rasterize(px, py, np.ascontiguousarray(local[:, 2]), faces, size, zbuf, np.full((size, size), -1, np.int64),
              np.zeros((size, size, 2)))
    return zbuf


def _symmetry_roll(local: np.ndarray, faces: np.ndarray, radius: float) -> float:
    """Roll angle (radians, about +z) of the most symmetric mirror plane x' = 0 of a face centred on its nose tip.

    The face is rasterised into a height map z(x, y) over [-radius, radius]²; the asymmetry of a plane with normal
    n = (cos a, sin a) is the mean |z(p) - z(p - 2 (p.n) n)| over the covered pixels (bilinear lookup), counting a
    mirror image that falls off the face as a capped difference. Searched on a 3° grid within ±45°, then on a 0.25°
    grid within ±3° of the best; each grid is scored in one compiled pass (:func:`_least_asymmetric`).
    """
    size = SYMMETRY_MAP_SIZE
    zbuf = _height_map(local, faces, radius)
    covered = np.isfinite(zbuf)
    if covered.sum() < 16:
        return 0.0
    x, y = pixel_grid(size, radius)
    x, y, heights = x[covered], y[covered], zbuf[covered]
    padded = np.pad(np.where(covered, zbuf, np.nan), 1, constant_values=np.nan)

    def best(angles: np.ndarray, expected: float) -> float:
        order = np.argsort(np.abs(angles - expected), kind="stable")
        return float(angles[_least_asymmetric(x, y, heights, padded, angles, order, size, radius, 0.1 * radius)])

    limit = np.radians(ROLL_SEARCH_DEGREES)
    coarse = best(np.arange(-limit, limit + 1e-9, np.radians(3.0)), 0.0)
    return best(coarse + np.radians(np.arange(-3.0, 3.01, 0.25)), coarse)


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
        z = _facing_direction(vertices, face_normals(vertices, face.faces), np.array([0.0, 0.0, 1.0]))
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
    normals = face_normals(vertices, face.faces)
    z = _facing_direction(vertices, normals, np.array([0.0, 0.0, 1.0]))
    rotation = _frame(z, up_hint)
    centre = vertices.mean(axis=0)
    radial = _lengths((vertices - centre) @ rotation[:2].T)
    nose = _nose_tip(vertices, rotation, centre, 0.4 * np.percentile(radial, 95))

    keep = _lengths(vertices - nose) <= crop_radius
    used = np.zeros(len(vertices), bool)
    used[face.faces[_within(face.faces, keep)].reshape(-1)] = True
    if used.sum() >= 10:
        z = _facing_direction(vertices[used], normals[_within(face.faces, used)], z)
        rotation = _frame(z, up_hint)
        nose = _nose_tip(vertices[used], rotation, nose, 0.3 * crop_radius)
    keep = _lengths(vertices - nose) <= crop_radius
    roll = _symmetry_roll((vertices - nose) @ rotation.T, face.faces[_within(face.faces, keep)], crop_radius)
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) @ rotation, nose


def _within(faces: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which triangles have all three vertices in `mask` (bool per triangle)."""
    return mask[faces[:, 0]] & mask[faces[:, 1]] & mask[faces[:, 2]]


def _crop(face: Face, canonical: np.ndarray, radius: float, scale: float) -> tuple[Face, bool]:
    """Keep the triangles within `radius` of the origin, drop unused vertices, scale, and make the surface face +z."""
    inside = _lengths(canonical) <= radius
    faces = face.faces[_within(face.faces, inside)]
    if len(faces) == 0:
        raise FormatError(
            f"no triangle lies within {radius:g} of the nose tip; is the scan in millimetres (it spans "
            f"{np.ptp(face.vertices, axis=0).round(1).tolist()})? Pass a larger crop_radius otherwise.",
            face.meta.get("path"),
        )
    in_use = np.zeros(len(canonical), bool)
    in_use[faces.reshape(-1)] = True
    used = np.flatnonzero(in_use)
    new_faces = (np.cumsum(in_use) - 1)[faces]
    vertices = canonical[used] * scale
    a, b, c = vertices[new_faces[:, 0]], vertices[new_faces[:, 1]], vertices[new_faces[:, 2]]
    normal_z = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flipped = bool(normal_z.sum() < 0)
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


#: The landmarks `align_to_reference` registers on: points an expression barely moves. BU-3DFE's ``.bnd`` eye
#: corners (0, 4, 8, 12) and nose points (36, 40-43, 47), the stable points of `facet_vlm.geometry.motion` (they
#: move 1.0-1.6 mm over a real BU-4DFE sequence after alignment, mouth points 2.5-5 mm), and the named eye corners
#: and nose tip of the other layouts.
STABLE_LANDMARKS: tuple[str, ...] = (
    tuple(f"bnd_{k:02d}" for k in STABLE_POINTS)
    + EYE_NAMES["left"] + EYE_NAMES["right"] + ("nose_tip",)
)


def align_to_reference(face: Face, reference: Face, crop_radius: float = 90.0, normalize: bool = True,
                       min_points: int = 3, aligned_reference: Face | None = None) -> Face:
    """Put a scan into the canonical frame of another scan of the same person (e.g. their neutral scan).

    `align` takes the frame of each scan from its own landmarks, the mouth included (BU-3DFE's ``.bnd`` up axis runs
    from the mouth to the eyes), so an open mouth tilts the whole face and the difference between an expressive
    and a neutral render would show the tilt everywhere. Here the rigid motion (Kabsch, no scaling) that best maps
    `face`'s `STABLE_LANDMARKS` onto `reference`'s is applied first, then `reference`'s own alignment (rotation,
    nose-tip origin, crop, scale), so both scans share one frame and differ only where the face moved.

    Args:
        face: the raw (unaligned) scan, in millimetres, with landmarks.
        reference: the raw (unaligned) reference scan, with landmarks.
        crop_radius, normalize: as in `align`.
        min_points: the fewest stable landmarks the two scans must share.
        aligned_reference: `reference` as `align` (with the same settings) already made it, when the caller has
            it; otherwise it is aligned here.

    Returns:
        A new Face as `align` makes it; ``meta["align"]`` has method "reference", the reference's rotation and
        origin, the stable landmarks used and their RMS residual after the fit (``reference_rms``, mm).

    Raises:
        ConfigError: an already aligned scan (the raw one is needed).
        FormatError: fewer than `min_points` finite stable landmarks shared (named with the scan's path).
    """
    if is_aligned(face) or is_aligned(reference):
        raise ConfigError("align_to_reference takes raw scans, not aligned ones (their landmarks must be in the "
                          "scans' own coordinates)")
    if aligned_reference is None:
        aligned_reference = align(reference, crop_radius=crop_radius, normalize=normalize)
    frame = aligned_reference.meta["align"]
    names = [name for name in STABLE_LANDMARKS if name in (face.landmark_names or ())
             and name in (reference.landmark_names or ())]
    moving = [face.landmark(name) for name in names]
    fixed = [reference.landmark(name) for name in names]
    used = [i for i, (a, b) in enumerate(zip(moving, fixed)) if np.all(np.isfinite(a)) and np.all(np.isfinite(b))]
    if len(used) < min_points:
        raise FormatError(f"only {len(used)} stable landmarks ({', '.join(names[i] for i in used) or 'none'}) are "
                          f"shared with the reference scan {reference.meta.get('path', '')}; align_to_reference "
                          f"needs {min_points} (eye corners, nose)", face.meta.get("path"))
    moving = np.array([moving[i] for i in used], dtype=np.float64)
    fixed = np.array([fixed[i] for i in used], dtype=np.float64)
    fit_rotation, fit_shift = rigid_fit(fixed, moving)
    residual = float(np.sqrt(((moving @ fit_rotation.T + fit_shift - fixed) ** 2).sum(axis=1).mean()))
    rotation, origin = np.asarray(frame["rotation"]), np.asarray(frame["origin"])

    def to_canonical(points: np.ndarray) -> np.ndarray:
        return (points.astype(np.float64) @ fit_rotation.T + fit_shift - origin) @ rotation.T

    scale = 1.0 / crop_radius if normalize else 1.0
    aligned, flipped = _crop(face, to_canonical(face.vertices), crop_radius, scale)
    if face.landmarks is not None:
        aligned.landmarks = (to_canonical(face.landmarks) * scale).astype(np.float32)
    aligned.meta["align"] = {**frame, "method": "reference", "flipped_winding": flipped,
                             "reference_points": [names[i] for i in used], "reference_rms": residual}
    return aligned
