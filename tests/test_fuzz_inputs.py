"""A fuzz corpus of bad inputs (issue 15): every reader, loader and the Space answers each one with a clear
`FacetVLMError` naming the file (or a refusal), never a raw exception, a stall, non-finite data or a silent accept.

Every input is generated here; no binary blob is committed.
"""

from __future__ import annotations

import pickle
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facet_vlm.errors import FacetVLMError, FormatError, MissingTextureError, UnsafePathError
from facet_vlm.io import is_inside, read_bnd, read_face, read_lm3, read_wrl, require_inside, write_bnt

# ---------------------------------------------------------------------------------------------------------------
# Generators of scans
# ---------------------------------------------------------------------------------------------------------------

HEADER = "#VRML V2.0 utf8\n"
TRIANGLE = "IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ] }"
SHAPE = f"Shape {{ geometry {TRIANGLE} }}"


def wrl(body: str) -> bytes:
    return (HEADER + body).encode()


def shape(points="0 0 0, 1 0 0, 0 1 0", index="0 1 2 -1", extra="", appearance="") -> str:
    return (
        f"Shape {{ {appearance} geometry IndexedFaceSet {{ coord Coordinate {{ point [ {points} ] }} "
        f"coordIndex [ {index} ] {extra} }} }}"
    )


def textured(url: str) -> str:
    uv = "texCoord TextureCoordinate { point [ 0 0, 1 0, 0 1 ] }"
    return shape(extra=uv, appearance=f'appearance Appearance {{ texture ImageTexture {{ url "{url}" }} }}')


def def_use_bomb(levels: int, fan_out: int = 10) -> str:
    """A scene whose level k USEs level k-1 `fan_out` times: 1 + 10 + ... + 10**levels triangles in a few
    hundred bytes (the 636-byte file of issue 15 has levels=5)."""
    lines = [f"DEF L0 {SHAPE}"]
    for level in range(1, levels + 1):
        uses = " ".join([f"USE L{level - 1}"] * fan_out)
        lines.append(f"DEF L{level} Group {{ children [ {uses} ] }}")
    return HEADER + "\n".join(lines) + "\n"


def nested_groups(depth: int) -> str:
    return HEADER + "Group { children [ " * depth + SHAPE + " ] }" * depth


def use_chain(length: int) -> str:
    """Each DEF wraps the previous one once: nesting `length` deep through USE, with flat text."""
    lines = [f"DEF L0 {SHAPE}"] + [f"DEF L{k} Group {{ children [ USE L{k - 1} ] }}" for k in range(1, length + 1)]
    return HEADER + "\n".join(lines)


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR is rewritten to claim `width` x `height` pixels (CRC fixed), as a bomb would."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bnt_bytes(zmin: float = -1e9, image_name: bytes = b"", xyz=None, uv=None) -> bytes:
    rows, cols = 3, 4
    if xyz is None:
        y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
        xyz = np.stack([x, -y, np.zeros_like(x)], axis=2)
    if uv is None:
        uv = np.zeros((rows, cols, 2))
    values = np.concatenate([xyz, uv], axis=2).reshape(-1, 5)
    header = struct.pack(f"<HHdH{len(image_name)}sI", rows, cols, zmin, len(image_name), image_name, values.size)
    return header + values.T.astype("<f8").tobytes()


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


OBJ_TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"

# ---------------------------------------------------------------------------------------------------------------
# The corpus: (file name, content, read_face options, error type, fragment of the message)
# ---------------------------------------------------------------------------------------------------------------

CORPUS = [
    # 3. DEF/USE expansion bomb (the 636-byte file) and deep nesting, in the text and through USE
    ("bomb.wrl", def_use_bomb(5), {}, FormatError, "expands to 111111 Shapes"),
    ("nested.wrl", nested_groups(400), {}, FormatError, "max_depth=64"),
    ("chain.wrl", use_chain(400), {}, FormatError, "max_depth=64"),
    # 6. Switch whichChoice that is not one integer
    ("choice_nan.wrl", wrl(f"Switch {{ whichChoice [ nan ] choice [ {SHAPE} ] }}"), {}, FormatError, "whichChoice"),
    ("choice_empty.wrl", wrl(f"Switch {{ whichChoice [ ] choice [ {SHAPE} ] }}"), {}, FormatError, "found nothing"),
    ("choice_huge.wrl", wrl(f"Switch {{ whichChoice 1e400 choice [ {SHAPE} ] }}"), {}, FormatError, "whichChoice"),
    ("choice_frac.wrl", wrl(f"Switch {{ whichChoice 0.5 choice [ {SHAPE} ] }}"), {}, FormatError, "one integer"),
    ("index_huge.wrl", wrl(shape(index="0 1 99999999999999999999 -1")), {}, FormatError, "out of range"),
    # 7. non-finite geometry after the float32 cast and after Transforms
    ("big39.wrl", wrl(shape(points="0 0 0, 1e39 0 0, 0 1 0")), {}, FormatError, "float32 range"),
    ("big300.wrl", wrl(shape(points="0 0 0, 1e300 0 0, 0 1 0")), {}, FormatError, "float32 range"),
    ("inf.wrl", wrl(shape(points="0 0 0, 1e400 0 0, 0 1 0")), {}, FormatError, "coordinate 1 is not finite"),
    (
        "rotation.wrl",
        wrl(f"Transform {{ rotation 0 0 1 nan children [ {SHAPE} ] }}"),
        {},
        FormatError,
        "Transform rotation",
    ),
    ("scale.wrl", wrl(f"Transform {{ scale 1e400 1 1 children [ {SHAPE} ] }}"), {}, FormatError, "Transform scale"),
    (
        "scale_overflow.wrl",
        wrl(f"Transform {{ scale 1e30 1 1 children [ {shape(points='0 0 0, 1e30 0 0, 0 1 0')} ] }}"),
        {},
        FormatError,
        "float32 range",
    ),
    (
        "uv_big.wrl",
        wrl(shape(extra="texCoord TextureCoordinate { point [ 0 0, 1e39 0, 0 1 ] }")),
        {"load_texture": False},
        FormatError,
        "texture coordinate 1",
    ),
    # 8. silent accepts
    ("point.wrl", wrl(shape(points="1 1 1, 1 1 1, 1 1 1")), {}, FormatError, "zero area"),
    ("line.wrl", wrl(shape(points="0 0 0, 1 1 1, 2 2 2")), {}, FormatError, "zero area"),
    ("point.obj", "v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n", {}, FormatError, "zero area"),
    ("zmin.bnt", bnt_bytes(zmin=float("nan")), {}, FormatError, "zmin"),
    ("uv_big.bnt", bnt_bytes(uv=np.full((3, 4, 2), 1e300)), {"load_texture": False}, FormatError, "float32 range"),
    (
        "short.off",
        "OFF\n3 5 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
        {},
        FormatError,
        "announces 5 faces but the file holds 1",
    ),
    ("missing_mtl.obj", "mtllib missing.mtl\nusemtl skin\n" + OBJ_TRIANGLE, {}, MissingTextureError, "missing.mtl"),
    (
        "tex7.wrl",
        wrl(
            shape(
                points="0 0 0, 1 0 0, 1 1 0, 0 1 0",
                index="0 1 2 -1 0 2 3 -1",
                extra="texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1 ] } texCoordIndex [ 0 1 2 0 2 3 -1 ]",
            )
        ),
        {"load_texture": False},
        FormatError,
        "texCoordIndex has 7 entries",
    ),
]


@pytest.mark.parametrize(("name", "content", "options", "error", "fragment"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_scan_gets_a_project_error_naming_the_file(tmp_path, name, content, options, error, fragment):
    path = write(tmp_path / name, content)
    started = time.perf_counter()
    with pytest.raises(error) as raised:
        read_face(path, **options)
    assert str(path) in str(raised.value) and fragment in str(raised.value)
    assert time.perf_counter() - started < 2.0  # no input stalls the reader


def test_def_use_bomb_fails_fast_and_the_caps_are_arguments(tmp_path):
    bomb = write(tmp_path / "bomb.wrl", def_use_bomb(5))
    assert bomb.stat().st_size < 700
    started = time.perf_counter()
    with pytest.raises(FormatError, match="max_shapes=1000"):
        read_wrl(bomb)
    assert time.perf_counter() - started < 0.5
    small = write(tmp_path / "small.wrl", def_use_bomb(3))  # 1 + 10 + 100 + 1000 = 1111 triangles
    with pytest.raises(FormatError, match="1111 Shapes"):
        read_wrl(small)
    face = read_wrl(small, max_shapes=2000)
    assert face.num_faces == 1111 and face.num_vertices == 3 * 1111
    with pytest.raises(FormatError, match=r"1111 triangles .* more than max_triangles=1000"):
        read_wrl(small, max_shapes=2000, max_triangles=1000)
    with pytest.raises(FormatError, match=r"3333 vertices .* more than max_vertices=3000"):
        read_wrl(small, max_shapes=2000, max_vertices=3000)
    deep = write(tmp_path / "deep.wrl", nested_groups(70))
    with pytest.raises(FormatError, match="max_depth=64"):
        read_wrl(deep)
    assert read_wrl(deep, max_depth=80).num_faces == 1


def test_valid_vrml_variants_read(tmp_path):
    """Empty lists and single nodes without brackets are valid VRML 2.0 (issue 15, item 5)."""
    cases = {
        "empty_group.wrl": (f"Group {{ children [ ] }} {SHAPE}", 1),
        "empty_url.wrl": (shape(appearance="appearance Appearance { texture ImageTexture { url [ ] } }"), 1),
        "empty_choice.wrl": (f"Switch {{ choice [ ] }} {SHAPE}", 1),
        "lod_single.wrl": (f"LOD {{ level {SHAPE} }}", 1),
        "switch_single.wrl": (f"Switch {{ whichChoice 0 choice {SHAPE} }}", 1),
        "switch_off.wrl": (f"Switch {{ whichChoice -1 choice {SHAPE} }} {SHAPE}", 1),
        "use_twice.wrl": (f"DEF S {SHAPE} Transform {{ translation 5 0 0 children USE S }}", 2),
    }
    for name, (body, triangles) in cases.items():
        face = read_face(write(tmp_path / name, wrl(body)))
        assert face.num_faces == triangles, name
    moved = read_face(tmp_path / "use_twice.wrl")
    assert moved.vertices[3:, 0].tolist() == [5.0, 6.0, 5.0]


def test_texture_names_never_leave_the_scan_folder(tmp_path):
    """Absolute and escaping texture names (issue 15, item 2): .wrl url and .bnt header."""
    secret = tmp_path / "secret" / "photo.png"
    secret.parent.mkdir()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(secret)
    folder = tmp_path / "uploads" / "one"
    names = [str(secret), "../../secret/photo.png", "..\\..\\secret\\photo.png", f"file://{secret}"]
    for number, name in enumerate(names):
        scan = write(folder / f"scan{number}.wrl", wrl(textured(name)))
        with pytest.warns(UserWarning, match="leaves the scan's folder"):
            with pytest.raises(MissingTextureError, match=f"scan{number}.wrl"):
                read_face(scan)
        with pytest.raises(FormatError, match="refused") as refused:
            read_face(scan, texture_paths="refuse")
        assert str(scan) in str(refused.value)
        with pytest.warns(UserWarning):
            face = read_face(scan, missing_texture="ignore")
        assert face.texture is None and face.meta["texture_path"] is None
    Image.new("RGB", (2, 2), (0, 0, 255)).save(folder / "photo.png")
    with pytest.warns(UserWarning, match="looking for 'photo.png'"):
        face = read_face(folder / "scan0.wrl")
    assert face.meta["texture_path"] == str(folder / "photo.png") and face.texture[0, 0].tolist() == [0, 0, 255]

    bnt = write(folder / "bs000_E_HAPPY_0.bnt", bnt_bytes(image_name=b"../../secret/photo.png"))
    with pytest.raises(FormatError, match="refused"):
        read_face(bnt, texture_paths="refuse")
    with pytest.warns(UserWarning, match="leaves the scan's folder"):
        face = read_face(bnt)
    assert face.meta["texture_path"] == str(folder / "photo.png")
    with pytest.raises(FacetVLMError, match="texture_paths must be"):
        read_face(bnt, texture_paths="anywhere")


def test_texture_decompression_bomb_is_a_format_error(tmp_path):
    write(tmp_path / "bomb.png", png_claiming(40000, 40000))
    scan = write(tmp_path / "scan.wrl", wrl(textured("bomb.png")))
    for policy in ("raise", "warn", "ignore"):
        with pytest.raises(FormatError, match="decompression bomb") as raised:
            read_face(scan, missing_texture=policy)
        assert "bomb.png" in str(raised.value)


def test_obj_texture_comes_from_its_material_or_follows_the_policy(tmp_path):
    no_mtl = write(tmp_path / "plain.obj", OBJ_TRIANGLE)
    assert read_face(no_mtl).texture is None  # not trimesh's grey placeholder
    missing = write(tmp_path / "missing.obj", "mtllib gone.mtl\nusemtl skin\n" + OBJ_TRIANGLE)
    with pytest.warns(UserWarning, match="gone.mtl"):
        assert read_face(missing, missing_texture="warn").texture is None
    assert read_face(missing, missing_texture="ignore").texture is None
    Image.new("RGB", (4, 2), (10, 200, 30)).save(tmp_path / "skin.png")
    write(tmp_path / "ok.mtl", "newmtl skin\nmap_Kd skin.png\n")
    good = read_face(write(tmp_path / "ok.obj", "mtllib ok.mtl\nusemtl skin\n" + OBJ_TRIANGLE))
    assert good.texture.shape == (2, 4, 3) and good.texture[0, 0].tolist() == [10, 200, 30]
    write(tmp_path / "escape.mtl", f"newmtl skin\nmap_Kd {tmp_path.parent}/elsewhere.png\n")
    Image.new("RGB", (3, 3)).save(tmp_path.parent / "elsewhere.png")
    with pytest.raises(MissingTextureError, match="elsewhere.png"):
        read_face(write(tmp_path / "escape.obj", "mtllib escape.mtl\nusemtl skin\n" + OBJ_TRIANGLE))


def test_landmark_counts_are_checked(tmp_path):
    lines = "".join(f"{k} {k}.0 1.0 2.0\n" for k in range(82))
    with pytest.raises(FormatError, match="82 landmarks, expected 83") as raised:
        read_bnd(write(tmp_path / "short.bnd", lines))
    assert "short.bnd" in str(raised.value)
    assert read_bnd(tmp_path / "short.bnd", expected_count=None)[0].shape == (82, 3)
    with pytest.raises(FormatError, match="float32 range"):
        read_bnd(write(tmp_path / "big.bnd", lines + "82 1e39 0 0\n"))
    with pytest.raises(FormatError, match="announces 0 landmarks"):
        read_lm3(write(tmp_path / "zero.lm3", "0 landmarks:\n"))
    with pytest.raises(FormatError, match="'nose_tip' given more than once"):
        read_lm3(write(tmp_path / "twice.lm3", "2 landmarks:\nNose tip\n0 0 0\nNose tip\n1 1 1\n"))


def test_a_good_bnt_still_reads(tmp_path):
    """The new checks refuse only what is wrong: a plain grid (written by `write_bnt`) reads as before."""
    y, x = np.mgrid[0:3, 0:4].astype(np.float64)
    path = write_bnt(tmp_path / "bs000_N_N_0.bnt", np.stack([x, -y, np.zeros_like(x)], axis=2))
    face = read_face(path, load_texture=False)
    assert face.num_vertices == 12 and face.num_faces == 12 and np.isfinite(face.uv).all()


# ---------------------------------------------------------------------------------------------------------------
# 1. The Space reads only uploaded files
# ---------------------------------------------------------------------------------------------------------------


def test_require_inside_resolves_links_and_parent_paths(tmp_path):
    uploads, outside = tmp_path / "uploads", tmp_path / "server"
    write(uploads / "abc" / "scan.obj", OBJ_TRIANGLE)
    write(outside / "private.obj", OBJ_TRIANGLE)
    (uploads / "abc" / "link.obj").symlink_to(outside / "private.obj")
    assert is_inside(uploads / "abc" / "scan.obj", [uploads])
    assert require_inside([str(uploads / "abc" / "scan.obj")], [uploads]) == [uploads / "abc" / "scan.obj"]
    refused = [
        outside / "private.obj",
        uploads / ".." / "server" / "private.obj",
        uploads / "abc" / "link.obj",
        uploads / "abc" / "nowhere.obj",
        uploads / "abc",
    ]
    for path in refused:
        assert not is_inside(path, [uploads]), path
        with pytest.raises(UnsafePathError, match="not a file uploaded") as raised:
            require_inside([uploads / "abc" / "scan.obj", path], [uploads])
        assert str(tmp_path) not in str(raised.value)  # the server's folders are not revealed
