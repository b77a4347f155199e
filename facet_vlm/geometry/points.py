"""Surface point clouds: area-weighted random sampling, then farthest-point downsampling.

Sampling ``oversample * n`` points uniformly over the surface area and keeping the ``n`` of them that farthest-point
sampling (FPS) picks gives an even, blue-noise-like cover of the face that does not depend on the mesh resolution
(scans differ a lot in triangle density). FPS is compiled with numba: O(n * oversample * n), 0.1-0.2 s for
4096 of 16384 points on one (shared) core.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from ..errors import ConfigError, FormatError
from ..face import Face
from .render import face_normals, sample_texture, vertex_normals


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _farthest_points(x, y, z, n, start):
    total = x.shape[0]
    nearest = np.full(total, np.inf, dtype=np.float32)
    chosen = np.empty(n, np.int64)
    current = start
    for k in range(n):
        chosen[k] = current
        cx, cy, cz = x[current], y[current], z[current]
        for i in range(total):
            dx = x[i] - cx
            dy = y[i] - cy
            dz = z[i] - cz
            nearest[i] = min(nearest[i], dx * dx + dy * dy + dz * dz)
        current = np.argmax(nearest)
    return chosen


def farthest_point_indices(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of `n` of the (K, 3) points chosen greedily, each the farthest from those chosen before.

    Float32 distances with structure-of-arrays loops that numba vectorises (no reassociation or FMA contraction, so
    the result does not depend on the CPU); ties go to the lowest index.
    """
    if not 1 <= n <= len(points):
        raise ConfigError(f"cannot pick {n} farthest points out of {len(points)}")
    x, y, z = (np.ascontiguousarray(points[:, k], dtype=np.float32) for k in range(3))
    return _farthest_points(x, y, z, int(n), int(start))


def sample_points(
    face: Face, n: int = 4096, seed: int = 0, oversample: int = 4, align_first: bool = True,
    regions: Sequence[str] | None = None, region_margin: float = 0.1,
) -> np.ndarray:
    """Sample `n` points evenly over the face surface.

    Args:
        face: the scan (aligned first unless ``align_first=False`` or already aligned).
        n: number of points returned.
        seed: seed of the random surface samples; the same seed gives the same points.
        oversample: draw ``oversample * n`` random surface points before farthest-point downsampling to `n`
            (1 = plain area-weighted random sampling).
        align_first: align and normalise the face first (see :func:`~facet_vlm.geometry.align`).
        regions: sample only these facial regions (names of :data:`~facet_vlm.geometry.REGION_NAMES`): the
            triangles whose centroid lies within `region_margin` of a region's ellipse (the ellipses AFNet-M's
            masks use, from the scan's landmarks, ``.bnd`` contours or the template), so the `n` points cover the
            regions evenly at a higher density than the whole face would get: a crop of the expressive regions
            for a point cloud. ``None`` (default): the whole face.
        region_margin: how far beyond the ellipses the crop reaches, aligned units (0.1 = 9 mm at the default
            90 mm crop).

    Returns:
        float32 (n, 6) = xyz and unit (smooth, interpolated vertex) normals, or (n, 9) with rgb in [0, 1] appended
        when the face has a uv texture or vertex colours. Rows are in FPS order, so the first k rows are themselves
        an even k-point cover.
    """
    from .align import align, is_aligned

    if n < 1 or oversample < 1:
        raise ConfigError(f"n={n}, oversample={oversample}: both must be at least 1")
    if align_first and not is_aligned(face):
        face = align(face)
    vertices = face.vertices.astype(np.float64)
    tri_normals = face_normals(vertices, face.faces)
    areas = np.linalg.norm(tri_normals, axis=1)
    if face.num_faces == 0 or not areas.sum() > 0:
        raise FormatError("mesh has no surface area to sample points from", face.meta.get("path"))

    rng = np.random.default_rng(seed)
    count = n * oversample
    chance = areas
    if regions is not None:
        from .masks import region_weights

        if region_margin <= 0:
            raise ConfigError(f"region_margin={region_margin}: must be positive")
        centroids = vertices[face.faces].mean(axis=1)
        # a gaussian fall-off of width `region_margin` is exp(-1/2) at `region_margin` beyond an ellipse
        inside = region_weights(face, centroids[:, :2], regions, region_margin) >= np.exp(-0.5) - 1e-6
        chance = np.where(inside, areas, 0.0)
        if not chance.sum() > 0:
            raise FormatError(f"no surface lies in or near the regions {tuple(regions)}", face.meta.get("path"))
    cumulative = np.cumsum(chance)
    tri = np.minimum(np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right"), face.num_faces - 1)
    r1, r2 = rng.random((2, count))
    root = np.sqrt(r1)
    weights = np.stack([1.0 - root, root * (1.0 - r2), root * r2], axis=1)
    corners = face.faces[tri]

    def interpolate(values: np.ndarray) -> np.ndarray:
        return np.einsum("kc,kcd->kd", weights, values[corners].astype(np.float64))

    xyz = interpolate(vertices)
    normals = interpolate(vertex_normals(vertices, face.faces))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    flat = tri_normals[tri] / np.maximum(areas[tri], 1e-300)[:, None]
    normals = np.where(length > 1e-8, normals / np.maximum(length, 1e-300), flat)
    columns = [xyz, normals]
    if face.uv is not None and face.texture is not None:
        columns.append(sample_texture(np.ascontiguousarray(face.texture, dtype=np.uint8), interpolate(face.uv)))
    elif face.colors is not None:
        columns.append(interpolate(face.colors) / 255.0)
    keep = farthest_point_indices(xyz, n, 0) if oversample > 1 else np.arange(n)
    return np.concatenate(columns, axis=1)[keep].astype(np.float32)


def surface_offsets(points: np.ndarray, reference: Face, max_offset: float = 0.15,
                    max_gap: float = 0.1) -> np.ndarray:
    """Signed distance of each point from the surface of another scan of the same person (e.g. its neutral scan).

    Both must be in the same frame (`facet_vlm.processing_utils.FaceProcessor.load_pair` registers a scan to its
    neutral scan). The distance is point-to-plane: along the unit normal of the reference vertex nearest to the
    point, ``(p - v) . n_v`` — exact for a plane and to second order on a smooth surface, so the sideways gap to the
    nearest vertex (about half the mesh spacing) does not show up as motion the way a plain nearest-point distance
    of two sampled clouds would (1024 points over a face lie about 7 mm apart; real brow and lip motion is 2-6 mm).
    Positive: the point lies in front of the reference surface (out of the face, +z of the aligned frame; the
    normals are turned that way if the reference's triangles are wound the other way).

    Args:
        points: (N, 3 or more) points; the first three columns are xyz.
        reference: the reference scan, in the same frame and units as `points`.
        max_offset: offsets are clipped to +-max_offset (aligned units: 1 = the crop radius, 0.15 = 13.5 mm at the
            default 90 mm), so a hole or an edge of the reference cannot dominate.
        max_gap: a point whose nearest reference vertex lies farther than this sideways (the reference has no
            surface there, e.g. outside its crop) gets offset 0; 0.1 = 9 mm, more than the half-diagonal of the
            sparsest meshes the library makes (2000 vertices: about 5 mm spacing).

    Returns:
        float32 (N,) offsets.
    """
    from scipy.spatial import cKDTree

    if reference.num_vertices == 0 or reference.num_faces == 0:
        raise FormatError("the reference scan has no surface to measure offsets from", reference.meta.get("path"))
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    vertices = reference.vertices.astype(np.float64)
    normals = vertex_normals(vertices, reference.faces)
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    if normals[:, 2].mean() < 0:  # triangles wound the other way: turn the normals out of the face (+z)
        normals = -normals
    distance, nearest = cKDTree(vertices).query(xyz)
    delta = xyz - vertices[nearest]
    offsets = np.einsum("nd,nd->n", delta, normals[nearest])
    sideways = np.sqrt(np.maximum(distance**2 - offsets**2, 0.0))
    offsets = np.where(sideways > max_gap, 0.0, np.clip(offsets, -max_offset, max_offset))
    return offsets.astype(np.float32)
