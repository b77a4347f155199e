"""Kernels of the z-buffer rasteriser behind `facet_vlm.geometry.render_views` (and the depth map of `align`).

Pure array code, no camera or channel logic: pixel coordinates of camera-space points (`to_pixels`, `pixel_grid`),
triangle and vertex normals, bilinear texture sampling, one z-buffer pass (`rasterize`: winning triangle and two
barycentric weights per pixel) and one shading pass (`shade`). The loops are compiled with numba
(``@njit(cache=True)``); the compiled code is cached on disk next to this file. The camera conventions and the
backend decision are documented in `facet_vlm.geometry.render`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


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
def rasterize(px, py, pz, faces, size, zbuf, tri_id, bary):
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
def shade(faces, tri_id, bary, zbuf, normals, uv, texture, colors, out,
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
