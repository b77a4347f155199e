"""Generic mesh formats read through trimesh: OBJ (+ MTL and texture), PLY, GLB / glTF, OFF, STL."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from ..errors import FormatError
from ..face import Face
from ._common import MissingTexturePolicy, check_finite, check_policy, load_texture_image

#: Extensions handed to trimesh.
TRIMESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")


def _material_image(visual: object) -> np.ndarray | None:
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_mesh(
    path: str | os.PathLike,
    *,
    load_texture: bool = True,
    missing_texture: MissingTexturePolicy = "ignore",
) -> Face:
    """Read a mesh file through trimesh (no processing: vertex order and count are kept) into a `Face`.

    A scene (several meshes, e.g. a .glb) is concatenated. uv come from a texture visual (trimesh splits OBJ
    vertices at uv seams), colours from per-vertex colours. The texture is the material's image; when the file
    has uv but trimesh found no image, the sibling ``<stem>.png/.jpg/.bmp`` is used if present. These formats
    name no texture that could be missing, so `missing_texture` only matters for an unreadable sibling image.
    """
    check_policy(missing_texture)
    if Path(path).stat().st_size == 0:
        raise FormatError("file is empty", path)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many unrelated types on bad input
        raise FormatError(f"trimesh cannot read it: {type(error).__name__}: {error}", path) from None
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(vertices) == 0:
        raise FormatError("the file holds no vertices", path)
    if len(faces) == 0:
        raise FormatError("the file holds no faces (a point cloud?); a triangle mesh is needed", path)
    check_finite(vertices, "vertex", path)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FormatError(f"face index {int(faces.max())} out of range (mesh has {len(vertices)} vertices)", path)

    visual = getattr(mesh, "visual", None)
    uv = texture = colors = None
    texture_path = None
    if visual is not None and visual.kind == "texture":
        if getattr(visual, "uv", None) is not None and len(visual.uv) == len(vertices):
            uv = np.asarray(visual.uv, dtype=np.float64)
            check_finite(uv, "texture coordinate", path)
        if load_texture:
            texture = _material_image(visual)
    elif visual is not None and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.uint8)[:, :3]
    if load_texture and uv is not None and texture is None:
        texture, texture_path = load_texture_image(path, [], missing_texture)
    meta = {
        "path": str(path),
        "format": Path(path).suffix.lower().lstrip("."),
        "texture_path": None if texture_path is None else str(texture_path),
    }
    return Face(vertices=vertices, faces=faces, uv=uv, texture=texture, colors=colors, meta=meta)
