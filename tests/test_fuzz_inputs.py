"""A fuzz corpus of bad inputs (issue 15): every reader, loader and the Space answers each one with a clear
`FacetVLMError` naming the file (or a refusal), never a raw exception, a stall, non-finite data or a silent accept.

Every input is generated here; no binary blob is committed.
"""

from __future__ import annotations

import pickle
import struct
import time
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
    import trimesh

    uv_only = trimesh.Trimesh(
        vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0]],
        faces=[[0, 1, 2]],
        visual=trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [0, 1]]),
        process=False,
    )
    uv_only.export(tmp_path / "plain.ply")
    plain_ply = read_face(tmp_path / "plain.ply")
    assert plain_ply.uv is not None and plain_ply.texture is None
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


def test_validate_files_reports_broken_links(tmp_path):
    from facet_vlm.io import validate_files

    good = write(tmp_path / "good.wrl", wrl(SHAPE))
    (tmp_path / "link.wrl").symlink_to(tmp_path / "gone.wrl")
    report = validate_files(tmp_path, progress=False)
    assert report.ok == [str(good)]
    assert report.bad == [(str(tmp_path / "link.wrl"), f"FacetVLMError: {tmp_path / 'link.wrl'}: broken symbolic "
                                                        "link: its target does not exist")]


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


# ---------------------------------------------------------------------------------------------------------------
# 4. The DEAP unpickler
# ---------------------------------------------------------------------------------------------------------------


class _Reduces:
    """Pickles as `function(*arguments)` (and `state` through BUILD), as a crafted file would."""

    def __init__(self, function, arguments, state=None):
        self.reduced = (function, arguments) if state is None else (function, arguments, state)

    def __reduce__(self):
        return self.reduced


def _reconstruct():
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


PICKLE_BOMBS = [
    ("bytearray.dat", lambda: _Reduces(bytearray, (2**44,)), FormatError, "memory bomb"),
    ("bytearray_small.dat", lambda: _Reduces(bytearray, (64 * 2**20,)), FormatError, "memory bomb"),
    ("reconstruct.dat", lambda: _Reduces(_reconstruct(), (np.ndarray, (2**40,), b"f8")), FormatError, "memory bomb"),
    (
        "object_state.dat",  # numpy would crash on this state (fewer items than the shape): refused before
        lambda: _Reduces(_reconstruct(), (np.ndarray, (0,), b"b"), (1, (2**20,), np.dtype("O"), False, [1])),
        Exception,
        "object",
    ),
    ("object_array.dat", lambda: {"data": np.array([1, "x"], dtype=object)}, Exception, "Python objects"),
    ("list_call.dat", lambda: _Reduces(list, ([0] * 10,)), None, None),
]


@pytest.mark.parametrize(("name", "make", "error", "fragment"), PICKLE_BOMBS, ids=[c[0] for c in PICKLE_BOMBS])
def test_unpickler_bounds_allocations_and_refuses_object_arrays(tmp_path, name, make, error, fragment):
    from facet_vlm.data.safe_pickle import restricted_load

    path = write(tmp_path / name, pickle.dumps(make(), protocol=2))
    if error is None:
        assert restricted_load(path) == [0] * 10
        return
    started = time.perf_counter()
    with pytest.raises(FacetVLMError) as raised:
        restricted_load(path)
    assert name in str(raised.value) and fragment in str(raised.value)
    assert time.perf_counter() - started < 2.0


def test_unpickler_reads_numpy_arrays_of_every_protocol(tmp_path):
    from facet_vlm.data.deap import load_deap_subject
    from facet_vlm.data.safe_pickle import restricted_load

    rng = np.random.default_rng(0)
    content = {"data": rng.normal(size=(2, 40, 8)), "labels": rng.uniform(1, 9, size=(2, 4)).astype(np.float32),
               "fortran": np.asfortranarray(rng.normal(size=(3, 5))), "scalar": np.float64(2.5)}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = write(tmp_path / f"p{protocol}.dat", pickle.dumps(content, protocol=protocol))
        loaded = restricted_load(path)
        for key, value in content.items():
            assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype
            np.testing.assert_array_equal(loaded[key], value)
        assert load_deap_subject(path)["data"].shape == (2, 40, 8)
    # DEAP's files are Python 2 pickles: the array bytes are an 8-bit string (BINSTRING), read as latin-1 text.
    array = np.array([1.0, -2.5])
    state = (1, (2,), np.dtype("f8"), False, "RAW")
    python3 = pickle.dumps(_Reduces(_reconstruct(), (np.ndarray, (0,), b"b"), state), protocol=2)
    python2 = python3.replace(b"X\x03\x00\x00\x00RAW", b"T" + struct.pack("<I", 16) + array.tobytes())
    np.testing.assert_array_equal(restricted_load(write(tmp_path / "py2.dat", python2)), array)
    out_of_band = write(tmp_path / "oob.dat", pickle.dumps(content, protocol=5, buffer_callback=lambda buffer: False))
    with pytest.raises(FormatError, match="oob.dat"):
        restricted_load(out_of_band)
    with pytest.raises(FormatError, match="memory bomb"):
        restricted_load(tmp_path / "p5.dat", max_bytes=100)


# ---------------------------------------------------------------------------------------------------------------
# 9-12. Data-set loaders
# ---------------------------------------------------------------------------------------------------------------


def touch(path: Path) -> Path:
    return write(path, b"")


def test_bu3dfe_duplicates_empty_folders_and_broken_links_are_reported(tmp_path):
    from facet_vlm.data import load_bu3dfe
    from facet_vlm.errors import ConfigError, DatasetLayoutError

    touch(tmp_path / "M0001" / "M0001_HA01AE_F3D.wrl")
    touch(tmp_path / "M0001" / "m0001_ha01ae_f3d.WRL")  # a case variant
    touch(tmp_path / "M0001" / "M0001_HA01WH_F3D.wrl")  # another race code for the same scan
    touch(tmp_path / "M0001" / "M0001_SA02AE_F3D.wrl")
    (tmp_path / "M0001" / "M0001_SU03AE_F3D.wrl").symlink_to(tmp_path / "gone.wrl")
    (tmp_path / "F0002").mkdir()
    (tmp_path / "F0003").symlink_to(tmp_path / "nowhere")
    with pytest.warns(UserWarning, match="5 files or folders"):
        index = load_bu3dfe(tmp_path)
    assert sorted(Path(path).name for path in index["path"]) == ["M0001_HA01AE_F3D.wrl", "M0001_SA02AE_F3D.wrl"]
    bad = "\n".join(index.bad_files)
    assert "m0001_ha01ae_f3d.WRL: repeats the scan M0001_HA01AE_F3D.wrl" in bad
    assert "M0001_HA01WH_F3D.wrl: repeats the scan M0001_HA01AE_F3D.wrl" in bad
    assert "M0001_SU03AE_F3D.wrl: broken symbolic link" in bad and "F0003: broken symbolic link" in bad
    assert "F0002: subject folder holds no .wrl scan" in bad
    with pytest.raises(DatasetLayoutError, match="repeats the scan"):
        load_bu3dfe(tmp_path, strict=True)
    with pytest.raises(ConfigError, match="kind must be one of F3D, RAW"):
        load_bu3dfe(tmp_path, kind="mesh")
    with pytest.raises(DatasetLayoutError, match="2 scans of the other kind than RAW"):
        load_bu3dfe(tmp_path, kind="raw")


def test_bosphorus_duplicates_and_categories(tmp_path):
    from facet_vlm.data import load_bosphorus
    from facet_vlm.errors import ConfigError

    for name in ("bs000_E_HAPPY_0", "bs000_E_HAPPY_00", "bs000_e_happy_0", "bs000_LFAU_12_0", "bs000_N_N_0"):
        touch(tmp_path / "bs000" / f"{name}.bnt")
    (tmp_path / "bs001").mkdir()
    with pytest.warns(UserWarning, match="3 files or folders"):
        index = load_bosphorus(tmp_path)
    assert sorted(Path(path).name for path in index["path"]) == ["bs000_E_HAPPY_0.bnt", "bs000_N_N_0.bnt"]
    assert sum("repeats the scan bs000_E_HAPPY_0.bnt" in bad for bad in index.bad_files) == 2
    assert any("bs001: subject folder holds no .bnt scan" in bad for bad in index.bad_files)
    with pytest.warns(UserWarning):
        action_units = load_bosphorus(tmp_path, categories="LFAU")
    assert action_units["code"] == ["12"] and action_units["category"] == ["LFAU"]
    for categories in ("HAPPY", ("E", "LFUA"), ()):
        with pytest.raises(ConfigError, match="choose among E, N, LFAU"):
            load_bosphorus(tmp_path, categories=categories)


def test_bu4dfe_duplicate_frames_and_sequences(tmp_path):
    from facet_vlm.data import load_bu4dfe

    for name in ("0.wrl", "000.wrl", "001.wrl"):
        touch(tmp_path / "F001" / "Happy" / name)
    touch(tmp_path / "F001" / "HAPPY" / "000.wrl")
    touch(tmp_path / "F001" / "Sad" / "000.wrl")
    (tmp_path / "F001" / "Sad" / "001.wrl").symlink_to(tmp_path / "gone.wrl")
    (tmp_path / "M002").mkdir()
    with pytest.warns(UserWarning, match="4 files or folders"):
        index = load_bu4dfe(tmp_path)
    happy = index.filter(lambda row: row["expression"] == "happiness")[0]
    assert Path(happy["path"]).name == "Happy" and [Path(p).name for p in happy["frames"]] == ["0.wrl", "001.wrl"]
    bad = "\n".join(index.bad_files)
    assert "000.wrl: frame 0 is also 0.wrl" in bad and "HAPPY: a second Happy sequence of F001" in bad
    assert "001.wrl: broken symbolic link" in bad and "M002: subject folder holds no sequence folder" in bad


def _mahnob_session(root: Path, number: int, valence: str, arousal: str = "5") -> None:
    folder = root / "Sessions" / str(number)
    write(folder / "session.xml", f'<session feltVlnc="{valence}" feltArsl="{arousal}"><subject id="1"/></session>')
    touch(folder / "P1-Rec1_C1 trigger _C1.avi")


@pytest.mark.parametrize("rating", ["nan", "inf", "42", "-7", "0"])
def test_mahnob_ratings_are_range_checked(tmp_path, rating):
    from facet_vlm.data.mahnob import load_mahnob

    _mahnob_session(tmp_path, 1, "7")
    _mahnob_session(tmp_path, 2, rating)
    with pytest.raises(FormatError, match=r"feltVlnc rating .* outside the 1\.\.9 scale") as raised:
        load_mahnob(tmp_path)
    assert str(tmp_path / "Sessions" / "2" / "session.xml") in str(raised.value)
    if rating not in ("nan", "inf"):
        assert load_mahnob(tmp_path, rating_range=(-10, 50))["valence"] == [7.0, float(rating)]


DEAP_HEADER = "Participant_id,Trial,Experiment_id,Start_time,Valence,Arousal,Dominance,Liking,Familiarity"
DEAP_BAD_ROWS = [
    ("1,2,2,0,nan,5,5,5,3", "line 3: valence rating nan"),
    ("1,2,2,0,inf,5,5,5,3", "line 3: valence rating inf"),
    ("1,2,2,0,42,5,5,5,3", "line 3: valence rating 42.0"),
    ("1,2,2,0,5,-7,5,5,3", "line 3: arousal rating -7.0"),
    ("1,2,2,0,,5,5,5,3", "line 3: valence rating nan"),
    ("1,2,2,0,5,5,10,5,3", "line 3: dominance rating 10.0"),
    ("1,2,0,0,5,5,5,5,3", "line 3: Experiment_id 0 is outside 1..40"),
    ("1,41,2,0,5,5,5,5,3", "line 3: Trial 41 is outside 1..40"),
    ("1,1,2,0,5,5,5,5,3", "participant 1 has Trial 1 again (first on line 2)"),
    ("1,2,1,0,5,5,5,5,3", "participant 1 has Experiment_id 1 again (first on line 2)"),
]


@pytest.mark.parametrize(("row", "fragment"), DEAP_BAD_ROWS, ids=[fragment for _, fragment in DEAP_BAD_ROWS])
def test_deap_ratings_ids_and_duplicates_are_checked(tmp_path, row, fragment):
    from facet_vlm.data.deap import load_deap

    csv_path = tmp_path / "metadata_csv" / "participant_ratings.csv"
    write(csv_path, f"{DEAP_HEADER}\n1,1,1,0,5,5,5,5,3\n{row}\n")
    with pytest.raises(FormatError, match="participant_ratings.csv") as raised:
        load_deap(tmp_path, require_video=False)
    assert fragment in str(raised.value) and str(csv_path) in str(raised.value)


def test_deap_csv_encoding_and_trial_index(tmp_path):
    from facet_vlm.data.deap import deap_channel, load_deap

    csv_path = write(tmp_path / "metadata_csv" / "participant_ratings.csv",
                     f"{DEAP_HEADER}\n1,1,1,0,5,5,,,3\n".encode() + b"1,2,2,0,5,5,5,5,3 \xff\n")
    with pytest.raises(FormatError, match=r"not UTF-8 text: byte 0xff .*\(line 3\)") as raised:
        load_deap(tmp_path, require_video=False)
    assert str(csv_path) in str(raised.value)
    write(csv_path, f"{DEAP_HEADER}\n1,1,1,0,5,5,,,3\n")
    row = load_deap(tmp_path, require_video=False)[0]
    assert row["dat_index"] == 0 and np.isnan(row["dominance"]) and row["valence_high"] == 0
    subject = {"data": np.zeros((2, 40, 3 * 128 + 4), np.float32), "labels": np.zeros((2, 4), np.float32)}
    with pytest.raises(FormatError, match="dat_index -1 is outside 0..1"):
        deap_channel(subject, -1)


def _call(url: str, endpoint: str, data: list) -> str:
    """Call a Space endpoint with raw JSON (as any HTTP client could) and return the event stream's text."""
    import httpx

    started = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=30)
    started.raise_for_status()
    return httpx.get(f"{url}gradio_api/call/{endpoint}/{started.json()['event_id']}", timeout=120).text


def test_space_refuses_server_files_named_by_the_api(tmp_path, space_url, space_uploads):
    """/predict and /analyze given a FileData naming a file on the server, not an upload (issue 15, item 1).

    Gradio 6 refuses paths outside its upload folder itself; the app's `only_uploads` check (real path inside the
    upload folder, see `test_require_inside_resolves_links_and_parent_paths`) answers whatever Gradio lets through.
    """
    from gradio_client import Client, handle_file

    private = write(tmp_path / "server" / "private.obj", "v 0 0 0\nv 7 0 0\nv 0 7 0\nf 1 2 3\n")
    escaping = f"{space_uploads}/../{tmp_path.name}/server/private.obj"
    for path in (str(private), escaping):
        file_data = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "private.obj"}
        for endpoint, data in (("predict", [file_data, None]), ("analyze", [[file_data], None, None])):
            answer = _call(space_url, endpoint, data)
            assert answer.startswith("event: error") and "complete" not in answer, (endpoint, answer)
    client = Client(space_url, verbose=False)
    result = client.predict(handle_file(str(private)), api_name="/predict")  # uploaded: now it is read
    assert sum(row["confidence"] for row in result["confidences"]) == pytest.approx(1.0, abs=1e-4)
