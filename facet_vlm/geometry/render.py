"""Multiview rendering of a face scan into texture, depth and normal images.

Camera and conventions
----------------------
The face is first put into its canonical frame (:func:`facet_vlm.geometry.align`: nose tip at the origin, eyes along
+x, facing +z, scaled into the unit ball). A view ``(yaw, pitch)`` in degrees rotates the *face* in front of a fixed
orthographic camera that looks down the -z axis from +z:

* positive yaw turns the face toward its own left (+x): the facing direction (0, 0, 1) becomes
  (sin yaw, 0, cos yaw), so the camera sees more of the subject's right cheek. Views (+a, p) and (-a, p) of a
  mirror-symmetric face are left-right mirror images of each other (normal x negated).
* positive pitch turns the face upward (chin up): the facing direction becomes (0, sin pitch, cos pitch).

The rotation is ``R = Rx(-pitch) @ Ry(yaw)``. The image window is the square [-extent, extent]² of camera x (to the
right, so the subject's left appears on the image right, as in a photograph) and y (up; row 0 is the top). Pixel
(row i, column j) samples the point x = ((j + 0.5) / size * 2 - 1) * extent, y = (1 - (i + 0.5) / size * 2) * extent.
``extent`` is 1 for a normalised face (``meta["align"]["extent"]``), the crop radius for one aligned without
normalisation.

Channels (any subset, in any order; their values are 0 on the background):

* ``texture`` (3): RGB in [0, 1], bilinear from ``face.texture`` at the barycentric uv (VRML uv: origin bottom-left,
  clamped to the image), else barycentric vertex colours, else a constant grey of 0.5 (:data:`UNTEXTURED_GREY`).
* ``depth`` (1): ``(z / extent - lo) / (hi - lo)`` clipped to [0, 1] with ``depth_range=(lo, hi)=(-1, 1)``, z being
  the camera-space z (toward the camera). The nose tip of a frontal view (z = 0) gets 0.5, nearer is brighter;
  any point of the unit ball maps into [0, 1]. 0 is also the background, so use the mask to tell them apart.
* ``normal`` (3): the smooth (barycentric, renormalised) vertex normal in camera space, xyz in [-1, 1], +z toward
  the camera. Rendering is two-sided: a visible back face (seen through a hole or at the silhouette of an open scan)
  shows its normal flipped toward the camera, which also makes scans with inconsistent winding usable.
* ``shaded`` (1): Lambertian grey under a headlight, i.e. the normal's z, for untextured geometry views.

Backend decision
----------------
A bounding-box z-buffer rasteriser with orthographic (perspective-free) barycentric interpolation, compiled with
numba (``@njit(cache=True)``): pip-only, no display, no GPU, no EGL. One rasterisation pass stores the winning
triangle and two barycentric weights per pixel; one shading pass interpolates uv / colours / normals only for the
covered pixels. Only triangles entirely off-screen are culled. Measured on the 2-core development machine (shared
with other jobs) with ``python scripts/bench.py render`` on a 15k-triangle textured 512² scan, 5 views at 224², all
three channels: 2.5-2.8 ms of CPU per view, i.e. 350-400 views/s on one core (the target was 100 views/s on two),
12.5-14 ms for the five default views, versus 50-70 ms for five views with moderngl+EGL (needs system EGL libraries),
~200 ms with trimesh+embreex ray casting and 200-300 ms with a torch z-buffer. The first call in a fresh
environment compiles the kernels (a few seconds); numba caches the compiled code on disk next to this file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from ..errors import ConfigError, FormatError
from ..face import Face

DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (30.0, 0.0), (-30.0, 0.0), (0.0, 20.0), (0.0, -20.0))
CHANNEL_SIZES: dict[str, int] = {"texture": 3, "depth": 1, "normal": 3, "shaded": 1}
UNTEXTURED_GREY = 0.5


def view_rotation(yaw: float, pitch: float) -> np.ndarray:
    """The 3x3 rotation applied to the canonical face for view (yaw, pitch) in degrees (see the module doc)."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), math.sin(b)], [0.0, -math.sin(b), math.cos(b)]])
    return rx @ ry


def to_pixels(points: np.ndarray, size: int, extent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous pixel (column, row) of camera-space points; pixel (i, j) has its centre at (j + .5, i + .5)."""
    scale = 0.5 * size / extent
    return (points[:, 0] + extent) * scale, (extent - points[:, 1]) * scale


def pixel_grid(size: int, extent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space x (H, W) and y (H, W) of the pixel centres."""
    centres = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0) * extent
    return np.broadcast_to(centres[None, :], (size, size)), np.broadcast_to(-centres[:, None], (size, size))


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised triangle normals (cross products; their length is twice the triangle area)."""
    v = vertices.astype(np.float64, copy=False)
    return np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, float32 (N, 3); zero for vertices used by no (or only degenerate) faces."""
    fn = face_normals(vertices, faces)
    n = len(vertices)
    flat = faces.reshape(-1)
    acc = np.stack([np.bincount(flat, np.repeat(fn[:, k], 3), minlength=n) for k in range(3)], axis=1)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    return (acc / np.where(length > 0, length, 1.0)).astype(np.float32)


@njit(cache=True)
def _bilinear(texture, u, v, out, offset, i, j):
    """Write the bilinear texture sample at VRML uv (u, v) into out[offset:offset+3, i, j]."""
    th, tw = texture.shape[0], texture.shape[1]
    x = min(max(u, 0.0), 1.0) * tw - 0.5
    y = (1.0 - min(max(v, 0.0), 1.0)) * th - 0.5
    x0 = math.floor(x)
    y0 = math.floor(y)
    fx = x - x0
    fy = y - y0
    x0c = min(max(x0, 0), tw - 1)
    x1c = min(max(x0 + 1, 0), tw - 1)
    y0c = min(max(y0, 0), th - 1)
    y1c = min(max(y0 + 1, 0), th - 1)
    for c in range(3):
        top = texture[y0c, x0c, c] * (1.0 - fx) + texture[y0c, x1c, c] * fx
        bottom = texture[y1c, x0c, c] * (1.0 - fx) + texture[y1c, x1c, c] * fx
        out[offset + c, i, j] = (top * (1.0 - fy) + bottom * fy) / 255.0


@njit(cache=True)
def sample_texture(texture, uv):
    """Bilinear RGB in [0, 1], float32 (K, 3), of a uint8 (H, W, 3) texture at VRML uv (K, 2)."""
    k = uv.shape[0]
    out = np.empty((3, 1, k), np.float32)
    for m in range(k):
        _bilinear(texture, uv[m, 0], uv[m, 1], out, 0, 0, m)
    return out[:, 0, :].T.copy()


@njit(cache=True)
def _rasterize(px, py, pz, faces, size, zbuf, tri_id, bary):
    """Z-buffer rasterisation at pixel centres: nearest (largest z) triangle id and its weights of vertices 0 and 1."""
    eps = -1e-7
    for t in range(faces.shape[0]):
        a = faces[t, 0]
        b = faces[t, 1]
        c = faces[t, 2]
        xa, ya, xb, yb, xc, yc = px[a], py[a], px[b], py[b], px[c], py[c]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if area == 0.0 or not math.isfinite(area):
            continue
        inv = 1.0 / area
        j0 = max(math.ceil(min(xa, xb, xc) - 0.5), 0)
        j1 = min(math.floor(max(xa, xb, xc) - 0.5), size - 1)
        i0 = max(math.ceil(min(ya, yb, yc) - 0.5), 0)
        i1 = min(math.floor(max(ya, yb, yc) - 0.5), size - 1)
        if j0 > j1 or i0 > i1:
            continue
        za, zb, zc = pz[a], pz[b], pz[c]
        for i in range(i0, i1 + 1):
            y = i + 0.5
            for j in range(j0, j1 + 1):
                x = j + 0.5
                wa = ((xb - x) * (yc - y) - (xc - x) * (yb - y)) * inv
                wb = ((xc - x) * (ya - y) - (xa - x) * (yc - y)) * inv
                wc = 1.0 - wa - wb
                if wa < eps or wb < eps or wc < eps:
                    continue
                z = wa * za + wb * zb + wc * zc
                if z > zbuf[i, j]:
                    zbuf[i, j] = z
                    tri_id[i, j] = t
                    bary[i, j, 0] = wa
                    bary[i, j, 1] = wb


@njit(cache=True)
def _shade(faces, tri_id, bary, zbuf, normals, uv, texture, colors, out,
           tex_off, depth_off, normal_off, shaded_off, depth_lo, depth_hi, extent, grey):
    """Fill the requested channels of out (C, H, W) for every covered pixel; a negative offset skips a channel."""
    size = tri_id.shape[0]
    has_texture = uv.shape[0] > 0 and texture.shape[0] > 0
    has_colors = colors.shape[0] > 0
    need_normal = normal_off >= 0 or shaded_off >= 0
    for i in range(size):
        for j in range(size):
            t = tri_id[i, j]
            if t < 0:
                continue
            a = faces[t, 0]
            b = faces[t, 1]
            c = faces[t, 2]
            wa = bary[i, j, 0]
            wb = bary[i, j, 1]
            wc = 1.0 - wa - wb
            if tex_off >= 0:
                if has_texture:
                    u = wa * uv[a, 0] + wb * uv[b, 0] + wc * uv[c, 0]
                    v = wa * uv[a, 1] + wb * uv[b, 1] + wc * uv[c, 1]
                    _bilinear(texture, u, v, out, tex_off, i, j)
                elif has_colors:
                    for k in range(3):
                        out[tex_off + k, i, j] = (wa * colors[a, k] + wb * colors[b, k] + wc * colors[c, k]) / 255.0
                else:
                    for k in range(3):
                        out[tex_off + k, i, j] = grey
            if depth_off >= 0:
                d = (zbuf[i, j] / extent - depth_lo) / (depth_hi - depth_lo)
                out[depth_off, i, j] = min(max(d, 0.0), 1.0)
            if need_normal:
                nx = wa * normals[a, 0] + wb * normals[b, 0] + wc * normals[c, 0]
                ny = wa * normals[a, 1] + wb * normals[b, 1] + wc * normals[c, 1]
                nz = wa * normals[a, 2] + wb * normals[b, 2] + wc * normals[c, 2]
                length = math.sqrt(nx * nx + ny * ny + nz * nz)
                if length > 0.0:
                    nx /= length
                    ny /= length
                    nz /= length
                if nz < 0.0:
                    nx, ny, nz = -nx, -ny, -nz
                if normal_off >= 0:
                    out[normal_off, i, j] = nx
                    out[normal_off + 1, i, j] = ny
                    out[normal_off + 2, i, j] = nz
                if shaded_off >= 0:
                    out[shaded_off, i, j] = nz


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    channels = tuple(channels)
    unknown = [c for c in channels if c not in CHANNEL_SIZES]
    if not channels or unknown or len(set(channels)) != len(channels):
        raise ConfigError(f"channels={channels!r}: give distinct names among {sorted(CHANNEL_SIZES)}")
    return channels


def num_channels(channels: Sequence[str]) -> int:
    """Total number of image channels of a channel list (texture 3, depth 1, normal 3, shaded 1)."""
    return sum(CHANNEL_SIZES[c] for c in _check_channels(channels))


def render_views(
    face: Face,
    views: Sequence[tuple[float, float]] | None = None,
    size: int = 224,
    channels: Sequence[str] = ("texture", "depth", "normal"),
    align_first: bool = True,
    depth_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Render a face from several (yaw, pitch) views with an orthographic camera (conventions in the module doc).

    Args:
        face: the scan; aligned with :func:`~facet_vlm.geometry.align` first unless ``align_first=False`` or it is
            already aligned (has ``meta["align"]``).
        views: (yaw, pitch) pairs in degrees; default :data:`DEFAULT_VIEWS` (frontal, yaw ±30, pitch ±20).
        size: image height and width in pixels.
        channels: names among "texture" (3), "depth" (1), "normal" (3), "shaded" (1), stacked in the given order.
        align_first: align (and normalise) the face before rendering.
        depth_range: the camera-space z (in units of the extent) mapped to depth 0 and 1.

    Returns:
        images float32 (V, C, H, W) and the foreground mask bool (V, H, W).
    """
    from .align import align, is_aligned

    channels = _check_channels(channels)
    views = DEFAULT_VIEWS if views is None else tuple((float(y), float(p)) for y, p in views)
    if size < 1:
        raise ConfigError(f"size={size}: must be a positive number of pixels")
    if depth_range[1] <= depth_range[0]:
        raise ConfigError(f"depth_range={depth_range}: the far end must come first and be smaller")
    if align_first and not is_aligned(face):
        face = align(face)
    if face.num_faces == 0:
        raise FormatError("mesh has no triangles to render", face.meta.get("path"))
    extent = float(face.meta.get("align", {}).get("extent", 1.0))

    offsets, start = {}, 0
    for name in channels:
        offsets[name] = start
        start += CHANNEL_SIZES[name]
    images = np.zeros((len(views), start, size, size), np.float32)
    masks = np.zeros((len(views), size, size), bool)

    vertices = face.vertices.astype(np.float64)
    faces = face.faces
    normals = vertex_normals(vertices, faces).astype(np.float64)
    has_texture = face.uv is not None and face.texture is not None
    uv = face.uv.astype(np.float64) if has_texture else np.zeros((0, 2))
    texture = np.ascontiguousarray(face.texture, dtype=np.uint8) if has_texture else np.zeros((0, 0, 3), np.uint8)
    colors = face.colors if face.colors is not None else np.zeros((0, 3), np.uint8)

    zbuf = np.empty((size, size))
    tri_id = np.empty((size, size), np.int64)
    bary = np.zeros((size, size, 2))
    for v, (yaw, pitch) in enumerate(views):
        rotation = view_rotation(yaw, pitch)
        cam = vertices @ rotation.T
        px, py = to_pixels(cam, size, extent)
        zbuf.fill(-np.inf)
        tri_id.fill(-1)
        _rasterize(px, py, np.ascontiguousarray(cam[:, 2]), faces, size, zbuf, tri_id, bary)
        _shade(faces, tri_id, bary, zbuf, normals @ rotation.T, uv, texture, colors, images[v],
               offsets.get("texture", -1), offsets.get("depth", -1), offsets.get("normal", -1),
               offsets.get("shaded", -1), depth_range[0], depth_range[1], extent, UNTEXTURED_GREY)
        masks[v] = tri_id >= 0
    return images, masks
