"""Readers and writers of raw scan formats.

`read_face` dispatches on the extension: ``.wrl`` (VRML 2.0: BU-3DFE, BU-4DFE, BP4D), ``.bnt`` (Bosphorus) and
the mesh formats trimesh reads (``.obj``, ``.ply``, ``.glb``, ``.gltf``, ``.off``, ``.stl``). Every reader returns
a `facet_vlm.Face` and raises a `facet_vlm.errors.FacetVLMError` subclass that names the file on bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FacetVLMError, UnsupportedFormatError
from ..face import Face
from ._common import MissingTexturePolicy, TexturePathPolicy, check_policy, check_texture_paths
from .bnt import grid_mesh, read_bnt, read_bnt_grid, write_bnt
from .landmarks import (
    BOSPHORUS_TO_STANDARD,
    LANDMARK_FRAME_SUFFIXES,
    read_bnd,
    read_landmark_sequence,
    read_lm3,
    read_tbnd,
    write_bnd,
    write_lm3,
    write_tbnd,
)
from .mesh import TRIMESH_EXTENSIONS, read_mesh, write_obj
from .paths import is_inside, require_inside
from .validate import ValidationReport, find_scan_files, validate_files
from .wrl import read_wrl, write_wrl

WRL_EXTENSIONS = (".wrl", ".vrml")
BNT_EXTENSIONS = (".bnt",)
#: Every extension `read_face` accepts (lower case).
SUPPORTED_EXTENSIONS = WRL_EXTENSIONS + BNT_EXTENSIONS + TRIMESH_EXTENSIONS


def read_face(
    path: str | os.PathLike,
    *,
    load_texture: bool = True,
    load_landmarks: bool = True,
    missing_texture: MissingTexturePolicy = "raise",
    texture_paths: TexturePathPolicy = "basename",
) -> Face:
    """Read a 3D face scan, choosing the reader by the file extension (case-insensitive).

    Args:
        path: a ``.wrl``, ``.bnt`` or trimesh-readable mesh file.
        load_texture: also read the texture image (uv are read either way).
        load_landmarks: attach the sibling landmark file with the same stem, if there is one: ``<stem>.bnd``
            for a .wrl (BU-3DFE), ``<stem>.lm3`` for a .bnt (Bosphorus); trimesh formats have none.
            ``meta["landmarks_path"]`` records the file used.
        missing_texture: "raise" (`MissingTextureError`), "warn" or "ignore" when a texture the scan names is
            not found (for trimesh formats: an OBJ's material file or the image it names).
        texture_paths: a texture name that is absolute or leaves the scan's folder (in a .wrl url or a .bnt
            header) is looked for by its file name in the scan's folder, with a warning ("basename"), or refused
            with `FormatError` ("refuse"); no image outside the scan's folder is ever read.

    Raises:
        UnsupportedFormatError: for an extension no reader knows.
        FacetVLMError: (a subclass of it) when the file or its landmark file is missing, empty, truncated or
            malformed, or the texture is missing.
    """
    check_policy(missing_texture)
    check_texture_paths(texture_paths)
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFormatError(
            f"unknown scan format {extension or '(no extension)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}",
            path,
        )
    if path.is_symlink() and not path.exists():
        raise FacetVLMError("broken symbolic link: its target does not exist", path)
    if not path.is_file():
        raise FacetVLMError("no such file", path)
    landmark_path = None
    if extension in WRL_EXTENSIONS:
        face = read_wrl(path, load_texture=load_texture, missing_texture=missing_texture, texture_paths=texture_paths)
        landmark_path, read_landmarks = path.with_suffix(".bnd"), read_bnd
    elif extension in BNT_EXTENSIONS:
        face = read_bnt(path, load_texture=load_texture, missing_texture=missing_texture, texture_paths=texture_paths)
        landmark_path, read_landmarks = path.with_suffix(".lm3"), read_lm3
    else:
        face = read_mesh(path, load_texture=load_texture, missing_texture=missing_texture)
    if load_landmarks and landmark_path is not None and landmark_path.is_file():
        face.landmarks, face.landmark_names = read_landmarks(landmark_path)
        face.meta["landmarks_path"] = str(landmark_path)
    return face


__all__ = [
    "BNT_EXTENSIONS",
    "BOSPHORUS_TO_STANDARD",
    "LANDMARK_FRAME_SUFFIXES",
    "SUPPORTED_EXTENSIONS",
    "TRIMESH_EXTENSIONS",
    "WRL_EXTENSIONS",
    "ValidationReport",
    "find_scan_files",
    "is_inside",
    "grid_mesh",
    "read_bnd",
    "read_bnt",
    "read_bnt_grid",
    "read_face",
    "read_landmark_sequence",
    "read_lm3",
    "read_mesh",
    "read_tbnd",
    "read_wrl",
    "require_inside",
    "validate_files",
    "write_bnd",
    "write_bnt",
    "write_lm3",
    "write_obj",
    "write_tbnd",
    "write_wrl",
]
