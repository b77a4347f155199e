"""Generic mesh formats read through trimesh: OBJ (+ MTL and texture), PLY, GLB / glTF, OFF, STL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import trimesh
from trimesh.resolvers import FilePathResolver

from ..errors import FormatError
from ..face import Face
from ._common import (
    TEXTURE_EXTENSIONS,
    MissingTexturePolicy,
    apply_missing_texture,
    check_float32,
    check_policy,
    check_surface,
    load_texture_image,
)

#: Extensions handed to trimesh.
TRIMESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
#: Formats whose texture image is a separate file the mesh names: without such a file actually read, the image
#: trimesh attaches is its own grey placeholder, not the scan's texture.
_IMAGE_BY_NAME = (".obj", ".ply")


class _RecordingResolver(FilePathResolver):
    """trimesh's resolver (confined to the mesh's folder) that records which companion files (an OBJ's .mtl and
    the images it names) were found and which were not."""

    def __init__(self, source: str):
        super().__init__(source)
        self.found: list[str] = []
        self.missing: list[str] = []

    def get(self, name: str) -> bytes:
        try:
            data = super().get(name)
        except Exception:
            self.missing.append(name)
            raise
        self.found.append(name)
        return data


def _check_off_counts(path: Path) -> None:
    """`FormatError` when an OFF header announces more faces than the file holds (trimesh reads what is there)."""
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, OSError):
        return
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or not re.match(r"^[A-Z]*OFF", lines[0]):
        return
    first = re.sub(r"^[A-Z]*OFF", "", lines[0]).split()
    counts, body = (first, lines[1:]) if first else (lines[1].split() if len(lines) > 1 else [], lines[2:])
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        return
    held = max(len(body) - num_vertices, 0)
    if held < num_faces:
        raise FormatError(
            f"the header announces {num_faces} faces but the file holds {held} face lines (file truncated?)", path
        )


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
    missing_texture: MissingTexturePolicy = "raise",
) -> Face:
    """Read a mesh file through trimesh (no processing: vertex order and count are kept) into a `Face`.

    A scene (several meshes, e.g. a .glb) is concatenated. uv come from a texture visual (trimesh splits OBJ
    vertices at uv seams), colours from per-vertex colours. The texture is the material's image; when the file
    has uv but no image was found, the sibling ``<stem>.png/.jpg/.bmp`` is used if present. Companion files (an
    OBJ's ``mtllib`` and the images it names) are looked for in the mesh's folder only. When one of them is
    missing and no sibling image stands in, `missing_texture` applies ("raise": `MissingTextureError`, "warn",
    "ignore"); the grey placeholder trimesh puts on an OBJ or PLY without a real texture image is never used.
    """
    check_policy(missing_texture)
    path = Path(path)
    if path.stat().st_size == 0:
        raise FormatError("file is empty", path)
    if path.suffix.lower() == ".off":
        _check_off_counts(path)
    resolver = _RecordingResolver(str(path))
    try:
        mesh = trimesh.load(path, force="mesh", process=False, resolver=resolver)
    except Exception as error:  # trimesh raises many unrelated types on bad input
        raise FormatError(f"trimesh cannot read it: {type(error).__name__}: {error}", path) from None
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(vertices) == 0:
        raise FormatError("the file holds no vertices", path)
    if len(faces) == 0:
        raise FormatError("the file holds no faces (a point cloud?); a triangle mesh is needed", path)
    check_float32(vertices, "vertex", path)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FormatError(f"face index {int(faces.max())} out of range (mesh has {len(vertices)} vertices)", path)
    check_surface(vertices, faces, path)

    visual = getattr(mesh, "visual", None)
    uv = texture = colors = None
    texture_path = None
    if visual is not None and visual.kind == "texture":
        if getattr(visual, "uv", None) is not None and len(visual.uv) == len(vertices):
            uv = np.asarray(visual.uv, dtype=np.float64)
            check_float32(uv, "texture coordinate", path)
        images_read = [name for name in resolver.found if name.lower().endswith(TEXTURE_EXTENSIONS)]
        if load_texture and (path.suffix.lower() not in _IMAGE_BY_NAME or images_read):
            texture = _material_image(visual)
    elif visual is not None and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.uint8)[:, :3]
    if load_texture and uv is not None and texture is None:
        texture, texture_path = load_texture_image(path, [], missing_texture)
    if load_texture and texture is None and resolver.missing:
        names = ", ".join(repr(name) for name in dict.fromkeys(resolver.missing))
        message = (
            f"companion file(s) {names} not found next to the file (the material or texture image); put "
            "them there, or pass missing_texture='ignore' (or load_texture=False) to read the mesh without"
        )
        apply_missing_texture(missing_texture, message, path, stacklevel=3)
    meta = {
        "path": str(path),
        "format": Path(path).suffix.lower().lstrip("."),
        "texture_path": None if texture_path is None else str(texture_path),
    }
    return Face(vertices=vertices, faces=faces, uv=uv, texture=texture, colors=colors, meta=meta)


def write_obj(path: str | os.PathLike, face: Face, image_suffix: str = ".jpg", quality: int = 95) -> Path:
    """Write a Wavefront OBJ with its material file and texture image beside it, as a BP4D-Spontaneous frame is
    stored (the user guide: "frame 0000 associates with 0000.jpg, 0000.mtl, and 0000.obj, among which, the
    material file (.mtl) records the material property of the model, and .jpg is the 2D texture image").

    Writes ``<stem>.obj`` (vertices, per-vertex uv when the face has them, triangles), ``<stem>.mtl`` and, when the
    face has a texture, ``<stem><image_suffix>`` (JPEG at `quality`, or any format PIL writes); returns the OBJ path.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".obj":
        raise FormatError("write_obj writes .obj files", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    has_uv = face.uv is not None and face.texture is not None
    material = path.with_suffix(".mtl")
    lines = [f"mtllib {material.name}", "usemtl face"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in face.vertices.astype(float).tolist()]
    if has_uv:
        lines += [f"vt {u:.9g} {v:.9g}" for u, v in face.uv.astype(float).tolist()]
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (face.faces + 1).tolist()]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in (face.faces + 1).tolist()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    material_lines = ["newmtl face", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0"]
    if has_uv:
        image = path.with_suffix(image_suffix)
        Image.fromarray(face.texture).save(image, quality=quality)
        material_lines.append(f"map_Kd {image.name}")
    material.write_text("\n".join(material_lines) + "\n", encoding="utf-8")
    return path
