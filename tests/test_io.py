"""Readers and writers of raw formats: hand-written small files of each format, round trips, and bad input."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import trimesh
from PIL import Image

from facet_vlm.errors import FacetVLMError, FormatError, MissingTextureError, UnsupportedFormatError
from facet_vlm.face import Face
from facet_vlm.io import (
    read_bnd,
    read_bnt,
    read_bnt_grid,
    read_face,
    read_lm3,
    read_wrl,
    validate_files,
    write_bnd,
    write_bnt,
    write_lm3,
    write_wrl,
)

# A quad (0 1 2 3) and a pentagon (1 4 5 6 2) sharing the edge 1-2. The pentagon gives vertices 1 and 2 other
# texture coordinates than the quad does, so texCoordIndex differs from coordIndex and there are two uv seams.
COORDS = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2.5, 0.5, 0], [2, 1, 0]]
POLYGONS = [[0, 1, 2, 3], [1, 4, 5, 6, 2]]
UVS = [[0, 0], [0.4, 0], [0.4, 1], [0, 1], [0.5, 0], [0.8, 0], [1, 0.5], [0.8, 1], [0.5, 1]]
UV_POLYGONS = [[0, 1, 2, 3], [4, 5, 6, 7, 8]]

QUAD_PENTAGON_WRL = """#VRML V2.0 utf8

# Produced by a 3D scanner
Transform {
  children [
    Shape {
      appearance Appearance {
        texture ImageTexture {
          url "name_the_scanner_gave.bmp"
        }
      }
      geometry IndexedFaceSet {
        creaseAngle 0.5
        solid FALSE
        coord Coordinate {
          point [
            0 0 0, 1 0 0, 1 1 0,
            0 1 0,
            2 0 0, 2.5 0.5 0, 2 1 0,
          ]
        }
        texCoord TextureCoordinate {
          point [
            0 0, 0.4 0, 0.4 1, 0 1,
            0.5 0, 0.8 0, 1 0.5, 0.8 1, 0.5 1,
          ]
        }
        coordIndex [
          0, 1, 2, 3, -1,
          1, 4, 5, 6, 2, -1,
        ]
        texCoordIndex [
          0, 1, 2, 3, -1, 4, 5, 6, 7, 8, -1,
        ]
      }
    }
  ]
}
"""


def _fan_corners(polygons, uv_polygons):
    """Reference triangulation: (coordinate, uv) index pairs of each fan triangle, polygon by polygon."""
    triangles = []
    for polygon, uv_polygon in zip(polygons, uv_polygons):
        for k in range(1, len(polygon) - 1):
            triangles.append([(polygon[j], uv_polygon[j]) for j in (0, k, k + 1)])
    return triangles


def _texture(height=4, width=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_quad_pentagon(folder, stem="F0001_HA04WH_F3D"):
    path = folder / f"{stem}.wrl"
    path.write_text(QUAD_PENTAGON_WRL)
    texture = _texture()
    Image.fromarray(texture).save(folder / f"{stem}.bmp")
    return path, texture


def test_wrl_polygons_are_fan_triangulated_and_split_at_uv_seams(tmp_path):
    path, texture = _write_quad_pentagon(tmp_path)
    face = read_wrl(path)
    triangles = _fan_corners(POLYGONS, UV_POLYGONS)
    expected_xyz = np.array([[COORDS[c] for c, _ in tri] for tri in triangles], dtype=np.float32)
    expected_uv = np.array([[UVS[t] for _, t in tri] for tri in triangles], dtype=np.float32)
    np.testing.assert_array_equal(face.vertices[face.faces], expected_xyz)
    np.testing.assert_array_equal(face.uv[face.faces], expected_uv)
    # one vertex per distinct (coordinate, uv) corner; coordinate i stays vertex i
    assert face.num_vertices == len({pair for tri in triangles for pair in tri})
    np.testing.assert_array_equal(face.vertices[: len(COORDS)], np.array(COORDS, dtype=np.float32))
    # the url names an image that is not there: the sibling <stem>.bmp real copies ship is used
    np.testing.assert_array_equal(face.texture, texture)
    assert face.meta["format"] == "wrl" and face.meta["path"] == str(path)
    assert face.meta["texture_path"].endswith("F0001_HA04WH_F3D.bmp")


def test_wrl_tolerates_real_file_variations(tmp_path):
    text = """#VRML V2.0 utf8
# a comment with [ brackets { that are not structure
DEF Root Group { children [
  Transform { translation 10 0 0 children [
      DEF Tri Shape { geometry IndexedFaceSet { solid FALSE
          coord Coordinate { point [ 0 0 0 1 0 0 0 1 0 ] }   # no commas
          color Color { color [ 1 0 0, 0 1 0, 0 0 1 ] }
          coordIndex [ 0 1 2 ] } }                            # no closing -1
  ] }
  USE Tri
  Shape { appearance Appearance { texture ImageTexture { url "scan#1.png" } }
    geometry IndexedLineSet { coord Coordinate { point [ 0 0 0 ] } } }
] }
"""
    path = tmp_path / "variations.wrl"
    path.write_text(text)
    face = read_wrl(path)
    triangle = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(face.vertices, np.concatenate([triangle + [10, 0, 0], triangle]))
    np.testing.assert_array_equal(face.faces, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(face.colors, np.tile(np.eye(3, dtype=np.uint8) * 255, (2, 1)))
    assert face.uv is None and face.texture is None
    assert face.meta["skipped_geometry"] == ["IndexedLineSet"]


def test_wrl_texture_url_with_hash_and_missing_texture_policies(tmp_path):
    text = QUAD_PENTAGON_WRL.replace("name_the_scanner_gave.bmp", "scan#1.png")
    path = tmp_path / "hash.wrl"
    path.write_text(text)
    with pytest.raises(MissingTextureError, match=r"hash\.wrl.*scan#1\.png"):
        read_wrl(path)
    assert read_wrl(path, missing_texture="ignore").texture is None
    with pytest.warns(UserWarning, match="scan#1.png"):
        assert read_wrl(path, missing_texture="warn").texture is None
    assert read_face(path, load_texture=False).uv is not None
    texture = _texture(3, 5, seed=1)
    Image.fromarray(texture).save(tmp_path / "scan#1.png")
    np.testing.assert_array_equal(read_wrl(path).texture, texture)


def _blocks(text, field):
    return [re.sub(r"[\s,]+", " ", block).strip() for block in re.findall(field + r"\s*\[([^\]]*)\]", text)]


def test_wrl_round_trip_writes_per_corner_uv_and_gives_the_face_back(tmp_path):
    source, texture = _write_quad_pentagon(tmp_path)
    face = read_wrl(source)
    out = write_wrl(tmp_path / "out" / "copy.wrl", face)
    text = out.read_text()
    # BU-3DFE style: each position once, uv per corner, so texCoordIndex differs from coordIndex at the seams
    coords = _blocks(text, "point")[0].split()
    assert len(coords) == 3 * len(COORDS)
    assert _blocks(text, "coordIndex") != _blocks(text, "texCoordIndex")
    assert 'url "copy.bmp"' in text and (tmp_path / "out" / "copy.bmp").is_file()
    again = read_wrl(out)
    np.testing.assert_array_equal(again.vertices, face.vertices)
    np.testing.assert_array_equal(again.faces, face.faces)
    np.testing.assert_array_equal(again.uv, face.uv)
    np.testing.assert_array_equal(again.texture, texture)


def test_wrl_round_trip_of_an_arbitrary_face_keeps_every_triangle(tmp_path):
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(20, 3)).astype(np.float32) * 50
    vertices = positions[rng.integers(0, 20, 40)]  # repeated positions with different uv: seams everywhere
    face = Face(
        vertices=vertices,
        faces=rng.integers(0, 40, (60, 3)),
        uv=rng.random((40, 2)),
        colors=rng.integers(0, 256, (40, 3)),
        texture=_texture(8, 8, seed=2),
    )
    again = read_wrl(write_wrl(tmp_path / "random.wrl", face, texture_path=tmp_path / "tex" / "random.png"))
    for attribute in ("vertices", "uv", "colors"):
        np.testing.assert_array_equal(getattr(again, attribute)[again.faces], getattr(face, attribute)[face.faces])
    np.testing.assert_array_equal(again.texture, face.texture)
    assert again.meta["texture_path"] == str(tmp_path / "tex" / "random.png")


def test_bnd_round_trip_and_sibling_landmarks(tmp_path):
    path, _ = _write_quad_pentagon(tmp_path)
    landmarks = np.random.default_rng(4).normal(size=(83, 3)).astype(np.float32) * 40
    bnd = write_bnd(tmp_path / f"{path.stem}.bnd", landmarks, vertex_indices=range(100, 183))
    bnd.write_text(bnd.read_text().replace("\n", "\n\n"))  # real files have blank lines
    read, names = read_bnd(bnd)
    np.testing.assert_array_equal(read, landmarks)
    assert names[0] == "bnd_00" and names[-1] == "bnd_82" and len(names) == 83
    face = read_face(path)
    np.testing.assert_array_equal(face.landmarks, landmarks)
    assert face.meta["landmarks_path"] == str(bnd)
    assert read_face(path, load_landmarks=False).landmarks is None


LM3 = """#3D landmark file
# created for a test
3 landmarks:
Nose tip
1.5 -2.25 90
Outer left eye corner
45 30 60.5
Left ear lobe
80 -10 -5
"""


def test_lm3_names_map_to_standard_names_and_round_trip(tmp_path):
    path = tmp_path / "bs000_E_HAPPY_0.lm3"
    path.write_text(LM3)
    landmarks, names = read_lm3(path)
    assert names == ["nose_tip", "left_eye_outer", "Left ear lobe"]
    np.testing.assert_array_equal(landmarks, np.array([[1.5, -2.25, 90], [45, 30, 60.5], [80, -10, -5]], np.float32))
    written = write_lm3(tmp_path / "copy.lm3", landmarks, names)
    assert "Nose tip" in written.read_text()
    again, again_names = read_lm3(written)
    np.testing.assert_array_equal(again, landmarks)
    assert again_names == names


def _bnt_bytes(xyz, uv, zmin, image_name=b"", count=None, cut=0):
    values = np.concatenate([xyz, uv], axis=2).reshape(-1, 5)
    rows, cols = xyz.shape[:2]
    count = values.size if count is None else count
    header = struct.pack("<HHdH", rows, cols, zmin, len(image_name)) + image_name + struct.pack("<I", count)
    data = header + values.T.astype("<f8").tobytes()
    return data[: len(data) - cut]


def _bnt_grid(rows=3, cols=4):
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    xyz = np.stack([2.0 * col - 3, 2.0 - 2.0 * row, 10 + 0.1 * col * row], axis=2)
    uv = np.stack([col / (cols - 1), row / (rows - 1)], axis=2)  # Bosphorus: image coordinates, origin top-left
    return xyz, uv


def test_bnt_grid_becomes_a_mesh_facing_the_camera(tmp_path):
    xyz, uv = _bnt_grid()
    zmin = -1e9
    xyz[0, 3] = zmin
    path = tmp_path / "bs000_E_HAPPY_0.bnt"
    path.write_bytes(_bnt_bytes(xyz, uv, zmin, b"bs000_E_HAPPY_0.png"))
    texture = _texture(5, 7, seed=5)
    Image.fromarray(texture).save(tmp_path / "bs000_E_HAPPY_0.png")
    (tmp_path / "bs000_E_HAPPY_0.lm3").write_text(LM3)
    face = read_face(path)
    valid = ~(xyz == zmin).any(axis=2)
    np.testing.assert_array_equal(face.vertices, xyz[valid].astype(np.float32))
    np.testing.assert_allclose(face.uv, np.stack([uv[valid][:, 0], 1 - uv[valid][:, 1]], 1), atol=1e-6)
    full_cells = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    assert face.num_faces == 2 * int(full_cells.sum())
    a, b, c = (face.vertices[face.faces[:, k]] for k in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()
    np.testing.assert_array_equal(face.texture, texture)
    assert face.landmark_names[0] == "nose_tip" and face.meta["grid_shape"] == (3, 4)


def test_bnt_round_trip(tmp_path):
    xyz, uv = _bnt_grid(4, 5)
    xyz[1, 2] = np.nan
    path = write_bnt(tmp_path / "scan.bnt", xyz, uv_grid=uv, image_name="scan.png")
    read_xyz, _, image_name = read_bnt_grid(path)
    np.testing.assert_array_equal(read_xyz, xyz)
    assert image_name == "scan.png"
    face = read_bnt(path, missing_texture="ignore")
    np.testing.assert_allclose(face.uv, uv[np.isfinite(xyz).all(axis=2)], atol=1e-6)
    with pytest.raises(MissingTextureError, match=r"scan\.bnt.*scan\.png"):
        read_bnt(path)


def test_trimesh_formats_read_with_uv_texture_and_colours(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = vertices[:, :2]
    texture = _texture(4, 8, seed=6)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture))
    trimesh.Trimesh(vertices, faces, visual=visual, process=False).export(tmp_path / "quad.obj")
    colours = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [9, 9, 9, 255]], dtype=np.uint8)
    trimesh.Trimesh(vertices, faces, vertex_colors=colours, process=False).export(tmp_path / "quad.ply")
    obj = read_face(tmp_path / "quad.obj")
    np.testing.assert_array_equal(obj.vertices[obj.faces], vertices[faces])
    np.testing.assert_array_equal(obj.uv[obj.faces], uv[faces])
    np.testing.assert_array_equal(obj.texture, texture)
    ply = read_face(tmp_path / "quad.ply")
    np.testing.assert_array_equal(ply.faces, faces)
    np.testing.assert_array_equal(ply.colors, colours[:, :3])
    assert ply.meta["format"] == "ply" and ply.landmarks is None


def _wrl(body):
    return ("#VRML V2.0 utf8\n" + body).encode()


_SHAPE = (
    "Shape {{ geometry IndexedFaceSet {{ coord Coordinate {{ point [ {points} ] }} coordIndex [ {index} ] {extra} }} }}"
)


def _shape(points="0 0 0, 1 0 0, 0 1 0", index="0 1 2 -1", extra=""):
    return _wrl(_SHAPE.format(points=points, index=index, extra=extra))


_XYZ, _UV = _bnt_grid()
BAD_FILES = [
    ("F0001_AN01WH_F3D.wrl", b"", read_face, FormatError, "file is empty"),
    ("vrml1.wrl", b"#VRML V1.0 ascii\nSeparator { }", read_face, FormatError, "not a VRML 2.0 file"),
    (
        "unclosed.wrl",
        _wrl("Shape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0"),
        read_face,
        FormatError,
        "never closed",
    ),
    ("nan.wrl", _shape(points="0 0 0, nan 0 0, 0 1 0"), read_face, FormatError, "coordinate 1 is not finite"),
    (
        "range.wrl",
        _shape(index="0 1 9 -1"),
        read_face,
        FormatError,
        "range.wrl: face index 9 out of range (mesh has 3 vertices)",
    ),
    (
        "odd_uv.wrl",
        _shape(extra="texCoord TextureCoordinate { point [ 0 0, 1 0, 1 ] }"),
        read_face,
        FormatError,
        "odd count",
    ),
    ("latin1.wrl", _wrl("# caf\xe9 au lait\n").replace(b"\xc3\xa9", b"\xe9"), read_face, FormatError, "not UTF-8"),
    (
        "no_texture.wrl",
        _shape(extra="texCoord TextureCoordinate { point [ 0 0, 1 0, 0 1 ] }").replace(
            b"Shape {", b'Shape { appearance Appearance { texture ImageTexture { url "gone.bmp" } }'
        ),
        read_face,
        MissingTextureError,
        "'gone.bmp' not found",
    ),
    ("columns.bnd", b"0 1.0 2.0 3.0\n1 1.0 2.0\n", read_bnd, FormatError, "line 2: expected 4 columns"),
    ("truncated.lm3", LM3.rsplit("\n", 3)[0].encode(), read_lm3, FormatError, "announces 3 landmarks"),
    ("empty.bnt", b"", read_face, FormatError, "file is empty"),
    ("short.bnt", _bnt_bytes(_XYZ, _UV, -1e9, cut=16), read_face, FormatError, "truncated"),
    ("count.bnt", _bnt_bytes(_XYZ, _UV, -1e9, count=57), read_face, FormatError, "not a multiple of 5"),
    ("scan.xyz", b"0 0 0\n", read_face, UnsupportedFormatError, "unknown scan format '.xyz'"),
    ("broken.ply", b"garbage", read_face, FormatError, "trimesh cannot read it"),
]


@pytest.mark.parametrize(("name", "content", "reader", "error", "fragment"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_input_raises_a_project_error_naming_the_file(tmp_path, name, content, reader, error, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as raised:
        reader(path)
    assert name in str(raised.value) and fragment in str(raised.value)


def test_validate_files_reports_bad_files_and_keeps_good_ones(tmp_path):
    good_wrl, _ = _write_quad_pentagon(tmp_path)
    write_bnt(tmp_path / "sub" / "good.bnt", *_bnt_grid())
    (tmp_path / "range.wrl").write_bytes(_shape(index="0 1 9 -1"))
    (tmp_path / "empty.obj").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a scan")
    report = validate_files([tmp_path, tmp_path / "notes.txt"], progress=False)
    assert sorted(report.ok) == sorted([str(good_wrl), str(tmp_path / "sub" / "good.bnt")])
    bad = dict(report.bad)
    assert set(bad) == {str(tmp_path / name) for name in ("range.wrl", "empty.obj", "notes.txt")}
    assert "out of range" in bad[str(tmp_path / "range.wrl")]
    assert "UnsupportedFormatError" in bad[str(tmp_path / "notes.txt")]
    assert "3 bad" in str(report) and "range.wrl" in str(report)
    saved = json.loads(report.to_json(tmp_path / "report.json").read_text())
    assert len(saved["ok"]) == 2 and {entry["path"] for entry in saved["bad"]} == set(bad)


def test_missing_file_is_a_project_error(tmp_path):
    with pytest.raises(FacetVLMError, match="nowhere.wrl"):
        read_face(tmp_path / "nowhere.wrl")
