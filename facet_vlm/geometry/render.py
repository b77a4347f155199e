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
environment compiles the kernels (a few seconds); numba caches the compiled code on disk. The kernels live in
`facet_vlm.geometry.raster`; this module holds the camera, the channels and `render_views`. It re-exports the
raster helpers that other geometry modules use (`pixel_grid`, `face_normals`, `vertex_normals`, `sample_texture`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, FormatError
from ..face import Face
from .raster import face_normals, pixel_grid, rasterize, sample_texture, shade, to_pixels, vertex_normals

__all__ = [
    "CHANNEL_SIZES",
    "DEFAULT_VIEWS",
    "UNTEXTURED_GREY",
    "face_normals",
    "num_channels",
    "pixel_grid",
    "render_views",
    "sample_texture",
    "to_pixels",
    "vertex_normals",
    "view_rotation",
]

DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (30.0, 0.0), (-30.0, 0.0), (0.0, 20.0), (0.0, -20.0))
CHANNEL_SIZES: dict[str, int] = {"texture": 3, "depth": 1, "normal": 3, "shaded": 1}
UNTEXTURED_GREY = 0.5


def view_rotation(yaw: float, pitch: float) -> np.ndarray:
    """The 3x3 rotation applied to the canonical face for view (yaw, pitch) in degrees (see the module doc)."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), math.sin(b)], [0.0, -math.sin(b), math.cos(b)]])
    return rx @ ry


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
        rasterize(px, py, np.ascontiguousarray(cam[:, 2]), faces, size, zbuf, tri_id, bary)
        shade(faces, tri_id, bary, zbuf, normals @ rotation.T, uv, texture, colors, images[v],
              offsets.get("texture", -1), offsets.get("depth", -1), offsets.get("normal", -1),
               offsets.get("shaded", -1), depth_range[0], depth_range[1], extent, UNTEXTURED_GREY)
        masks[v] = tri_id >= 0
    return images, masks
