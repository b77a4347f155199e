"""VRML 2.0 (.wrl) reader and writer, as used by BU-3DFE, BU-4DFE and BP4D.

The reader parses the scene structure with a small tokenizer but hands every bracketed numeric block
(``point [...]``, ``coordIndex [...]``) to numpy in one call, so an 8k-vertex BU-3DFE scan reads in milliseconds.
It understands Shape / IndexedFaceSet with Coordinate, TextureCoordinate (+ per-corner ``texCoordIndex``),
Color (+ ``colorIndex``, ``colorPerVertex``), ``ccw``, ImageTexture urls, Transform / Group / LOD / Switch
wrappers (Transform fields are applied), DEF / USE, comments and optional commas. Polygons are fan-triangulated,
and vertices are split at texture (and colour) seams so that `Face.uv` is truly per vertex.

DEF / USE lets a few hundred bytes describe millions of triangles (each level of nesting multiplies the copies), so
the reader counts what the scene expands to before building anything and refuses it with `FormatError` past the
caps of `read_wrl` (``max_shapes``, ``max_vertices``, ``max_triangles``, ``max_depth``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FormatError
from ..face import Face
from ._common import (
    MissingTexturePolicy,
    TexturePathPolicy,
    check_finite,
    check_float32,
    check_policy,
    check_surface,
    check_texture_paths,
    load_texture_image,
    read_text,
)

_HEADER = "#VRML V2.0"
_TOKEN = re.compile(r'[\s,]*(?:([{}\[\]])|"((?:[^"\\]|\\.)*)"|([^\s,{}\[\]"#]+))')
_SKIP = re.compile(r"[\s,]*")
_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*"')
_NUMBER = re.compile(r"[-+]?(?:\d|\.\d|(?:nan|inf|infinity)$)", re.IGNORECASE)
_NUMERIC_START = re.compile(r"\]|[-+]?(?:\d|\.\d|nan\b|inf)", re.IGNORECASE)
_GROUPS = ("Transform", "Group", "Anchor", "Billboard", "Collision", "LOD", "Switch")
#: Default caps of `read_wrl` on what the scene may expand to (choices: far above a face scan, far below what
#: would take seconds or gigabytes to build).
MAX_SHAPES = 1_000
MAX_VERTICES = 5_000_000
MAX_TRIANGLES = 10_000_000
MAX_DEPTH = 64


@dataclass
class _Block:
    """The text of a bracketed numeric array, parsed only when a field is used."""

    start: int
    end: int


@dataclass
class _Node:
    type: str
    line: int
    fields: dict[str, Any] = field(default_factory=dict)


class _Parser:
    """Recursive-descent parser of the VRML 2.0 scene structure."""

    def __init__(self, text: str, path: str | os.PathLike, max_depth: int = MAX_DEPTH):
        self.text = text
        self.path = path
        self.pos = 0
        self.defs: dict[str, _Node | None] = {}
        self.max_depth = max_depth
        self.depth = 0

    def error(self, message: str, pos: int | None = None) -> FormatError:
        if pos is None:
            return FormatError(message, self.path)
        return FormatError(f"line {self.line(pos)}: {message}", self.path)

    def line(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def next(self, advance: bool = True) -> tuple[str, str, int] | None:
        """The next token as (kind, value, position), kind being "punct", "string" or "word"; None at the end."""
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            end = _SKIP.match(self.text, self.pos).end()
            if end < len(self.text):
                raise self.error(f"unexpected character {self.text[end]!r}", end)
            return None
        if advance:
            self.pos = match.end()
        punct, string, word = match.groups()
        start = match.start(match.lastindex)
        if punct is not None:
            return "punct", punct, start
        if string is not None:
            return "string", string, start - 1
        return "word", word, start

    def expect(self, value: str, opened: tuple[str, int]) -> None:
        token = self.next()
        if token is None:
            raise self.unclosed(*opened)
        if token[1] != value or token[0] != "punct":
            raise self.error(f"expected {value!r}, found {token[1]!r}", token[2])

    def unclosed(self, bracket: str, pos: int) -> FormatError:
        return self.error(f"{bracket!r} opened at line {self.line(pos)} is never closed (file truncated?)")

    def parse_scene(self) -> list[_Node]:
        nodes = []
        while (token := self.next()) is not None:
            kind, value, pos = token
            if kind == "word" and value == "ROUTE":
                for _ in range(3):
                    self.next()
                continue
            if kind == "word" and value in ("PROTO", "EXTERNPROTO"):
                raise self.error(f"{value} declarations are not supported; expand them into plain nodes", pos)
            node = self.parse_node(token)
            if node is not None:
                nodes.append(node)
        return nodes

    def parse_node(self, token: tuple[str, str, int]) -> _Node | None:
        kind, value, pos = token
        if kind != "word":
            raise self.error(f"expected a node, found {value!r}", pos)
        if value == "NULL":
            return None
        if value in ("DEF", "USE"):
            name = self.next()
            if name is None or name[0] != "word":
                raise self.error(f"{value} must be followed by a name", pos)
            if value == "USE":
                if name[1] not in self.defs:
                    raise self.error(f"USE {name[1]} refers to no DEF before it", pos)
                return self.defs[name[1]]
            inner = self.next()
            if inner is None:
                raise self.error(f"DEF {name[1]} is not followed by a node", pos)
            node = self.parse_node(inner)
            self.defs[name[1]] = node
            return node
        node = _Node(value, self.line(pos))
        self.expect("{", ("{", pos))
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.error(f"nodes nested more than max_depth={self.max_depth} deep", pos)
        while True:
            token = self.next()
            if token is None:
                raise self.unclosed("{", pos)
            if token[:2] == ("punct", "}"):
                self.depth -= 1
                return node
            if token[0] != "word":
                raise self.error(f"expected a field name in {value}, found {token[1]!r}", token[2])
            node.fields[token[1]] = self.parse_value()

    def parse_value(self) -> Any:
        token = self.next()
        if token is None:
            raise self.error("file ends where a field value was expected (file truncated?)")
        kind, value, pos = token
        if kind == "punct":
            if value != "[":
                raise self.error(f"unexpected {value!r}", pos)
            return self.parse_list(pos)
        if kind == "string":
            return value
        if _NUMBER.match(value):
            numbers = [value]
            while (peek := self.next(advance=False)) is not None and peek[0] == "word" and _NUMBER.match(peek[1]):
                numbers.append(self.next()[1])
            return tuple(numbers)
        peek = self.next(advance=False)
        if value in ("DEF", "USE") or (peek is not None and peek[:2] == ("punct", "{")):
            return self.parse_node(token)
        return value

    def parse_list(self, open_pos: int) -> Any:
        start = _SKIP.match(self.text, open_pos + 1).end()
        if start >= len(self.text):
            raise self.unclosed("[", open_pos)
        if _NUMERIC_START.match(self.text, start):
            end = self.text.find("]", start)
            if end < 0:
                raise self.unclosed("[", open_pos)
            if any(self.text.find(bracket, start, end) >= 0 for bracket in "[{}"):
                raise self.unclosed("[", open_pos)
            self.pos = end + 1
            return _Block(start, end)
        items: list[Any] = []
        while True:
            token = self.next()
            if token is None:
                raise self.unclosed("[", open_pos)
            if token[:2] == ("punct", "]"):
                return items
            if token[0] == "string":
                items.append(token[1])
            else:
                node = self.parse_node(token)
                if node is not None:
                    items.append(node)

    def numbers(self, value: Any, dtype: type, what: str) -> np.ndarray:
        """A numeric field value as a flat array; `FormatError` naming the field and line when it is not one."""
        if isinstance(value, tuple):
            try:
                floats = np.asarray([float(number) for number in value])
            except ValueError:
                raise self.error(f"{what}: {' '.join(value)!r} are not numbers") from None
            if dtype is not float and not (np.isfinite(floats).all() and (floats == np.round(floats)).all()):
                raise self.error(f"{what}: {' '.join(value)!r} are not integers")
            return floats.astype(dtype)
        if isinstance(value, list) and not value:
            return np.zeros(0, dtype=dtype)
        if not isinstance(value, _Block):
            raise self.error(f"{what} must be a list of numbers, found {value!r}")
        text = self.text[value.start : value.end].replace(",", " ")
        if not text.strip():
            return np.zeros(0, dtype=dtype)
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, OverflowError):
            for offset, token in ((m.start(), m.group()) for m in re.finditer(r"\S+", text)):
                try:
                    float(token) if dtype is float else np.int64(int(token))
                except (ValueError, OverflowError):
                    kind = "an integer" if dtype is not float else "a number"
                    raise self.error(f"{what}: {token!r} is not {kind}", value.start + offset) from None
            raise self.error(f"{what}: cannot parse the numbers", value.start) from None


@dataclass
class _Part:
    """One Shape, triangulated and split at seams."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None
    colors: np.ndarray | None
    texture_urls: tuple[str, ...]
    degenerate_polygons: int


def _axis_angle(rotation: np.ndarray) -> np.ndarray:
    axis, angle = rotation[:3], rotation[3]
    norm = np.linalg.norm(axis)
    if norm == 0 or angle == 0:
        return np.eye(4)
    x, y, z = axis / norm
    c, s, t = np.cos(angle), np.sin(angle), 1 - np.cos(angle)
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
    return matrix


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _transform_matrix(node: _Node, parser: _Parser) -> np.ndarray | None:
    """The 4x4 matrix of a VRML Transform (T C R SR S -SR -C), or None when it is the identity."""

    def vector(name: str, default: tuple[float, ...]) -> np.ndarray:
        value = node.fields.get(name, default)
        array = parser.numbers(value, float, f"Transform {name}")
        if len(array) != len(default):
            raise parser.error(f"Transform {name} needs {len(default)} numbers, found {len(array)}")
        if not np.isfinite(array).all():
            raise parser.error(f"Transform {name} at line {node.line} holds NaN or infinite values {array.tolist()}")
        return array

    translation = vector("translation", (0.0, 0.0, 0.0))
    center = vector("center", (0.0, 0.0, 0.0))
    rotation = vector("rotation", (0.0, 0.0, 1.0, 0.0))
    scale = vector("scale", (1.0, 1.0, 1.0))
    scale_orientation = vector("scaleOrientation", (0.0, 0.0, 1.0, 0.0))
    orient = _axis_angle(scale_orientation)
    matrix = (
        _translation(translation)
        @ _translation(center)
        @ _axis_angle(rotation)
        @ orient
        @ np.diag([*scale, 1.0])
        @ orient.T
        @ _translation(-center)
    )
    if not np.isfinite(matrix).all():
        raise parser.error(f"Transform at line {node.line} overflows: its matrix holds infinite values")
    return None if np.array_equal(matrix, np.eye(4)) else matrix


def _node_list(value: Any, what: str, parser: _Parser) -> list[_Node]:
    """A field that holds nodes (``children [ ... ]``, ``level Shape { }``, ``[ ]``) as a list of nodes."""
    if value is None or value == "NULL":
        return []
    if isinstance(value, _Node):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, _Node)]
    if isinstance(value, _Block):
        if not parser.text[value.start : value.end].strip():
            return []
        raise parser.error(f"{what} must list nodes, found numbers", value.start)
    raise parser.error(f"{what} must list nodes, found {value!r}")


def _children(node: _Node, parser: _Parser) -> list[_Node]:
    """The child nodes a grouping node shows: the first LOD level, the chosen Switch choice, else children."""
    if node.type == "LOD":
        return _node_list(node.fields.get("level"), "LOD level", parser)[:1]
    if node.type == "Switch":
        values = parser.numbers(node.fields.get("whichChoice", ("-1",)), float, "Switch whichChoice")
        if len(values) != 1 or not np.isfinite(values[0]) or values[0] != np.round(values[0]):
            shown = " ".join(str(value) for value in values.tolist()) or "nothing"
            raise parser.error(f"Switch whichChoice at line {node.line} must be one integer, found {shown}")
        options = _node_list(node.fields.get("choice"), "Switch choice", parser)
        choice = values[0]
        return [options[int(choice)]] if 0 <= choice < len(options) else []
    return _node_list(node.fields.get("children"), f"{node.type} children", parser)


@dataclass
class _Limits:
    """The caps of `read_wrl` and the shapes read so far (each DEF'd Shape is read once, however often USEd)."""

    max_shapes: int
    max_vertices: int
    max_triangles: int
    max_depth: int
    parts: dict[int, _Part | None] = field(default_factory=dict)
    sizes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)


def _part(shape: _Node, parser: _Parser, limits: _Limits) -> _Part | None:
    if id(shape) not in limits.parts:
        limits.parts[id(shape)] = _read_shape(shape, parser)
    return limits.parts[id(shape)]


def _expanded_size(node: _Node, depth: int, parser: _Parser, limits: _Limits) -> tuple[int, int, int, int]:
    """(Shapes, vertices, triangles, nesting height) that `node` expands to, memoised per node, so that counting
    a DEF/USE bomb costs as much as its text, not as its expansion."""
    if id(node) not in limits.sizes:
        if depth > limits.max_depth:
            raise parser.error(f"nodes nested (through USE) more than max_depth={limits.max_depth} deep")
        if node.type == "Shape":
            part = _part(node, parser, limits)
            size = (0, 0, 0, 1) if part is None else (1, len(part.vertices), len(part.faces), 1)
        elif node.type in _GROUPS:
            children = [_expanded_size(child, depth + 1, parser, limits) for child in _children(node, parser)]
            size = (
                *(sum(child[k] for child in children) for k in range(3)),
                1 + max((child[3] for child in children), default=0),
            )
        else:
            size = (0, 0, 0, 1)
        limits.sizes[id(node)] = size
    size = limits.sizes[id(node)]
    if depth + size[3] - 1 > limits.max_depth:
        raise parser.error(f"nodes nested (through USE) more than max_depth={limits.max_depth} deep")
    return size


def _check_expansion(nodes: list[_Node], parser: _Parser, limits: _Limits) -> None:
    sizes = [_expanded_size(node, 1, parser, limits) for node in nodes if isinstance(node, _Node)]
    totals = [sum(size[k] for size in sizes) for k in range(3)]
    for total, cap, noun, name in zip(
        totals,
        (limits.max_shapes, limits.max_vertices, limits.max_triangles),
        ("Shapes", "vertices", "triangles"),
        ("max_shapes", "max_vertices", "max_triangles"),
    ):
        if total > cap:
            raise parser.error(
                f"the scene expands to {total} {noun} (DEF/USE copies counted), more than {name}={cap}; refused "
                f"as a possible expansion bomb (pass a larger {name} to read_wrl if the file is trusted)"
            )


def _collect_shapes(nodes: list[Any], matrix: np.ndarray | None, parser: _Parser, out: list) -> None:
    for node in nodes:
        if not isinstance(node, _Node):
            continue
        if node.type == "Shape":
            out.append((node, matrix))
            continue
        if node.type not in _GROUPS:
            continue
        child_matrix = matrix
        if node.type == "Transform":
            local = _transform_matrix(node, parser)
            if local is not None:
                child_matrix = local if matrix is None else matrix @ local
        _collect_shapes(_children(node, parser), child_matrix, parser, out)


def _child(node: _Node, name: str, expected: str, parser: _Parser) -> _Node | None:
    value = node.fields.get(name)
    if value is None or value == "NULL":
        return None
    if not isinstance(value, _Node) or value.type != expected:
        found = value.type if isinstance(value, _Node) else repr(value)
        raise parser.error(f"{node.type} {name} must be a {expected} node, found {found}")
    return value


def _polygons(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Fan-triangulate a -1 separated polygon index list.

    Returns (corners (M, 3) positions into `index`, polygon id of each triangle, number of polygons with fewer
    than 3 corners, which produce no triangle).
    """
    ends = np.flatnonzero(index == -1)
    if len(index) and index[-1] != -1:
        ends = np.append(ends, len(index))
    if len(ends) == 0:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    counts = ends - starts - 2
    polygon_ids = np.flatnonzero(counts > 0)
    counts = counts[polygon_ids]
    first = np.repeat(starts[polygon_ids], counts)
    step = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    corners = np.stack([first, first + step, first + step + 1], axis=1)
    return corners, np.repeat(polygon_ids, counts), int(len(ends) - len(polygon_ids))


def _check_range(index: np.ndarray, size: int, what: str, noun: str, parser: _Parser) -> None:
    used = index[index != -1]
    if used.size == 0:
        return
    low, high = int(used.min()), int(used.max())
    if low < -1:
        raise parser.error(f"{what} {low} is negative")
    if high >= size:
        raise parser.error(f"{what} {high} out of range (mesh has {size} {noun})")


def _same_polygons(index: np.ndarray, other: np.ndarray, name: str, parser: _Parser) -> np.ndarray:
    """`other` (texCoordIndex / colorIndex) padded like `index`; it must have the same -1 separators."""
    given = len(other)
    if len(other) == len(index) - 1 and index[-1] == -1:
        other = np.append(other, -1)
    elif len(other) == len(index) + 1 and other[-1] == -1:
        other = other[:-1]
    if len(other) != len(index) or not np.array_equal(other == -1, index == -1):
        raise parser.error(
            f"{name} has {given} entries but coordIndex has {len(index)}, or their -1 polygon separators "
            f"differ; {name} must list one index per polygon corner"
        )
    return other


def _split_seams(vertex_ids: np.ndarray, attribute_ids: np.ndarray, num_vertices: int) -> tuple[np.ndarray, ...]:
    """Give every distinct (vertex, attribute indices) corner key its own vertex.

    Vertex i keeps slot i for its lowest attribute key, so that indices into the file's coordinates (e.g. the
    vertex numbers of a BU-3DFE .bnd) stay valid; the extra copies made at seams are appended in the order of
    their attribute indices. Returns (source vertex of each slot, attribute key row of each slot or -1,
    corner slots).
    """
    keys = np.column_stack([vertex_ids, attribute_ids])
    sizes = tuple(int(column.max()) + 1 for column in keys.T)
    if np.prod(np.asarray(sizes, dtype=np.float64)) < 2.0**62:
        packed, inverse = np.unique(np.ravel_multi_index(tuple(keys.T), sizes), return_inverse=True)
        unique = np.column_stack(np.unravel_index(packed, sizes)).astype(np.int64)
    else:
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    first = np.ones(len(unique), dtype=bool)
    first[1:] = unique[1:, 0] != unique[:-1, 0]
    extra = np.flatnonzero(~first)
    extra = extra[np.lexsort(unique[extra, 1:].T[::-1])] if extra.size else extra
    slots = np.empty(len(unique), dtype=np.int64)
    slots[first] = unique[first, 0]
    slots[extra] = num_vertices + np.arange(len(extra))
    source = np.concatenate([np.arange(num_vertices), unique[extra, 0]])
    attributes = np.full((len(source), attribute_ids.shape[1]), -1, dtype=np.int64)
    attributes[slots] = unique[:, 1:]
    return source, attributes, slots[inverse.reshape(-1)]


def _read_shape(shape: _Node, parser: _Parser) -> _Part | None:
    """One Shape in its own coordinates (the Transforms above it are applied per use, see `_placed`)."""
    geometry = shape.fields.get("geometry")
    if not isinstance(geometry, _Node) or geometry.type != "IndexedFaceSet":
        return None
    coord = _child(geometry, "coord", "Coordinate", parser)
    if coord is None:
        raise parser.error(f"IndexedFaceSet at line {geometry.line} has no coord Coordinate")
    points = parser.numbers(coord.fields.get("point", ()), float, "Coordinate point")
    if len(points) % 3:
        raise parser.error(f"Coordinate point has {len(points)} numbers, not a multiple of 3 (x y z per point)")
    points = points.reshape(-1, 3)
    check_finite(points, "coordinate", parser.path)
    index = parser.numbers(geometry.fields.get("coordIndex", ()), np.int64, "coordIndex")
    _check_range(index, len(points), "face index", "vertices", parser)
    corners, polygon_of, degenerate = _polygons(index)
    if len(corners) == 0:
        return None
    if geometry.fields.get("ccw", "TRUE") == "FALSE":
        corners = corners[:, ::-1]
    vertex_ids = index[corners].reshape(-1)

    attributes, by_vertex, uv_points, color_values = [], [], None, None
    tex_coord = _child(geometry, "texCoord", "TextureCoordinate", parser)
    if tex_coord is not None:
        uv_points = parser.numbers(tex_coord.fields.get("point", ()), float, "TextureCoordinate point")
        if len(uv_points) % 2:
            raise parser.error(f"TextureCoordinate point has {len(uv_points)} numbers, an odd count (u v per point)")
        uv_points = uv_points.reshape(-1, 2)
        check_float32(uv_points, "texture coordinate", parser.path)
        if "texCoordIndex" in geometry.fields:
            uv_index = parser.numbers(geometry.fields["texCoordIndex"], np.int64, "texCoordIndex")
            uv_index = _same_polygons(index, uv_index, "texCoordIndex", parser)
            _check_range(uv_index, len(uv_points), "texture coordinate index", "texture coordinates", parser)
        else:
            uv_index = index
            _check_range(
                uv_index, len(uv_points), "face index (used as texture coordinate index)", "texture coordinates", parser
            )
        attributes.append(uv_index[corners].reshape(-1))
        by_vertex.append(uv_index is index)
    color = _child(geometry, "color", "Color", parser)
    if color is not None:
        color_values = parser.numbers(color.fields.get("color", ()), float, "Color color")
        if len(color_values) % 3:
            raise parser.error(f"Color color has {len(color_values)} numbers, not a multiple of 3 (r g b)")
        color_values = color_values.reshape(-1, 3)
        check_finite(color_values, "colour", parser.path)
        per_vertex = geometry.fields.get("colorPerVertex", "TRUE") != "FALSE"
        color_index = None
        if "colorIndex" in geometry.fields:
            color_index = parser.numbers(geometry.fields["colorIndex"], np.int64, "colorIndex")
            if per_vertex:
                color_index = _same_polygons(index, color_index, "colorIndex", parser)
        if per_vertex:
            color_index = index if color_index is None else color_index
            _check_range(color_index, len(color_values), "colour index", "colours", parser)
            attributes.append(color_index[corners].reshape(-1))
            by_vertex.append(color_index is index)
        else:
            per_polygon = np.arange(int(polygon_of.max()) + 1) if color_index is None else color_index
            if len(per_polygon) <= polygon_of.max():
                raise parser.error(f"colorIndex has {len(per_polygon)} entries for {polygon_of.max() + 1} polygons")
            _check_range(per_polygon, len(color_values), "colour index", "colours", parser)
            if (per_polygon[polygon_of] < 0).any():
                raise parser.error("colorIndex holds -1 for a polygon although colorPerVertex is FALSE")
            attributes.append(np.repeat(per_polygon[polygon_of], 3))
            by_vertex.append(False)

    if attributes:
        source, keys, corner_slots = _split_seams(vertex_ids, np.column_stack(attributes), len(points))
    else:
        source, keys, corner_slots = np.arange(len(points)), np.zeros((len(points), 0), np.int64), vertex_ids
    vertices = points[source]
    uv = colors = None
    if uv_points is not None:
        uv = _gather(uv_points, keys[:, 0], source, by_vertex[0])
    if color_values is not None:
        rgb = _gather(color_values, keys[:, -1], source, by_vertex[-1])
        colors = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    faces = corner_slots.reshape(-1, 3)
    return _Part(vertices, faces, uv, colors, _texture_urls(shape, parser), degenerate)


def _placed(part: _Part, matrix: np.ndarray | None) -> _Part:
    """`part` moved by the Transform `matrix` above one of its uses (a copy; the cached part is not changed)."""
    if matrix is None:
        return part
    vertices = part.vertices @ matrix[:3, :3].T + matrix[:3, 3]
    return _Part(vertices, part.faces, part.uv, part.colors, part.texture_urls, part.degenerate_polygons)


def _gather(values: np.ndarray, keys: np.ndarray, source: np.ndarray, by_vertex: bool) -> np.ndarray:
    """Per-vertex attribute rows from their keys. A vertex no polygon uses has key -1: it takes the row of its
    own vertex number when the attribute is indexed by vertex, else zeros."""
    if by_vertex:
        keys = np.where((keys < 0) & (source < len(values)), source, keys)
    gathered = values[np.maximum(keys, 0)] if len(values) else np.zeros((len(keys), values.shape[1]))
    gathered[keys < 0] = 0.0
    return gathered


def _texture_urls(shape: _Node, parser: _Parser) -> tuple[str, ...]:
    appearance = _child(shape, "appearance", "Appearance", parser)
    if appearance is None:
        return ()
    texture = appearance.fields.get("texture")
    if not isinstance(texture, _Node) or texture.type != "ImageTexture":
        return ()
    url = texture.fields.get("url", ())
    if isinstance(url, str):
        return (url,)
    return tuple(item for item in url if isinstance(item, str)) if isinstance(url, list) else ()


def _atlas(textures: list[np.ndarray], uvs: list[np.ndarray], bands: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stack several textures top to bottom into one image and move each part's uv into its texture's band."""
    width = max(texture.shape[1] for texture in textures)
    rows = [texture.shape[0] for texture in textures]
    height, tops = sum(rows), np.cumsum([0] + rows)
    atlas = np.zeros((height, width, 3), dtype=np.uint8)
    for texture, top in zip(textures, tops):
        atlas[top : top + texture.shape[0], : texture.shape[1]] = texture
    moved = []
    for uv, band in zip(uvs, bands):
        cols, bottom = textures[band].shape[1], height - tops[band] - rows[band]
        moved.append(np.column_stack([uv[:, 0] * cols / width, (bottom + uv[:, 1] * rows[band]) / height]))
    return atlas, moved


def _strip_comments(text: str) -> str:
    """`text` without its ``#`` comments (a ``#`` inside a quoted string is kept); newlines are kept."""
    if "#" not in text:
        return text
    pieces, kept_from, pos = [], 0, 0
    while (hash_at := text.find("#", pos)) >= 0:
        quote_at = text.find('"', pos, hash_at)
        if quote_at >= 0:
            rest = _STRING_REST.match(text, quote_at + 1)
            pos = len(text) if rest is None else rest.end()
            continue
        end = text.find("\n", hash_at)
        end = len(text) if end < 0 else end
        pieces.append(text[kept_from:hash_at])
        kept_from = pos = end
    pieces.append(text[kept_from:])
    return "".join(pieces)


def read_wrl(
    path: str | os.PathLike,
    *,
    load_texture: bool = True,
    missing_texture: MissingTexturePolicy = "raise",
    texture_paths: TexturePathPolicy = "basename",
    max_shapes: int = MAX_SHAPES,
    max_vertices: int = MAX_VERTICES,
    max_triangles: int = MAX_TRIANGLES,
    max_depth: int = MAX_DEPTH,
) -> Face:
    """Read a VRML 2.0 scan (BU-3DFE ``*_F3D.wrl``, BU-4DFE and BP4D frames) into a `Face`.

    Args:
        path: the .wrl file.
        load_texture: read the image named by ImageTexture (or, when that name is not found, the sibling
            ``<stem>.bmp/.png/.jpg`` that real copies ship). With False, uv are still read but no image.
        missing_texture: "raise" (`MissingTextureError`), "warn" or "ignore" when the named texture is not found.
        texture_paths: what to do with a texture url that is absolute or leaves the scan's folder: "basename"
            (look for its file name in the scan's folder, with a warning) or "refuse" (`FormatError`). No image
            outside the scan's folder is ever read.
        max_shapes, max_vertices, max_triangles: caps on what the scene expands to, every USE of a DEF counted
            as a copy; past one, `FormatError` is raised before anything is built (DEF/USE expansion bombs).
        max_depth: cap on the nesting of nodes, in the text and through USE.

    Several Shapes are concatenated; if they use different images, those are stacked top to bottom into one
    atlas and the uv moved accordingly (with ``load_texture=False`` their uv are left as in the file). uv and
    colours are kept only if every Shape has them (otherwise ``meta["dropped"]`` says what was dropped).
    Landmarks are not read here (see `facet_vlm.io.read_face`).

    ``meta``: ``path``, ``format`` ("wrl"), ``texture_url`` (the first url named, or None), ``texture_path`` (the
    image read, a list of them for an atlas, or None), and where they apply ``skipped_geometry`` (non-polygon
    Shapes such as IndexedLineSet), ``degenerate_polygons`` (polygons of fewer than 3 corners, which give no
    triangle) and ``dropped``.
    """
    check_policy(missing_texture)
    check_texture_paths(texture_paths)
    text = read_text(path)
    first_line = text.split("\n", 1)[0].strip()
    if not first_line.startswith(_HEADER):
        raise FormatError(
            f"not a VRML 2.0 file: the first line is {first_line[:40]!r}, expected '#VRML V2.0 utf8'", path
        )
    header_end = text.find("\n")
    body = "" if header_end < 0 else text[header_end:]
    body = _strip_comments(body)
    parser = _Parser(body, path, max_depth)
    limits = _Limits(max_shapes, max_vertices, max_triangles, max_depth)
    shapes: list[tuple[_Node, np.ndarray | None]] = []
    try:
        scene = parser.parse_scene()
        _check_expansion(scene, parser, limits)
        _collect_shapes(scene, None, parser, shapes)
    except RecursionError:
        raise FormatError("the scene is nested too deeply to read", path) from None
    parts = [_placed(part, matrix) for shape, matrix in shapes if (part := _part(shape, parser, limits)) is not None]
    skipped = [
        shape.fields["geometry"].type
        for shape, _ in shapes
        if isinstance(shape.fields.get("geometry"), _Node) and shape.fields["geometry"].type != "IndexedFaceSet"
    ]
    if not parts:
        raise FormatError("no IndexedFaceSet with at least one polygon found; is this a mesh?", path)

    meta: dict[str, Any] = {"path": str(path), "format": "wrl", "texture_path": None}
    if skipped:
        meta["skipped_geometry"] = skipped
    degenerate = sum(part.degenerate_polygons for part in parts)
    if degenerate:
        meta["degenerate_polygons"] = degenerate
    dropped = []
    has_uv = all(part.uv is not None for part in parts)
    has_colors = all(part.colors is not None for part in parts)
    if not has_uv and any(part.uv is not None for part in parts):
        dropped.append("uv (not every Shape has texture coordinates)")
    if not has_colors and any(part.colors is not None for part in parts):
        dropped.append("colors (not every Shape has colours)")
    uvs = [part.uv for part in parts] if has_uv else None

    urls = list(dict.fromkeys(part.texture_urls for part in parts if part.texture_urls))
    meta["texture_url"] = urls[0][0] if urls else None
    texture = None
    if load_texture and len(urls) <= 1 and (urls or has_uv):
        texture, found = load_texture_image(path, urls[0] if urls else (), missing_texture, True, texture_paths)
        meta["texture_path"] = None if found is None else str(found)
    elif load_texture and len(urls) > 1:
        loaded = [load_texture_image(path, url, missing_texture, False, texture_paths) for url in urls]
        if all(image is not None for image, _ in loaded) and uvs is not None:
            bands = [urls.index(part.texture_urls) if part.texture_urls else 0 for part in parts]
            texture, uvs = _atlas([image for image, _ in loaded], uvs, bands)
            meta["texture_path"] = [str(found) for _, found in loaded]

    offsets = np.cumsum([0] + [len(part.vertices) for part in parts])
    vertices = np.concatenate([part.vertices for part in parts])
    faces = np.concatenate([part.faces + offset for part, offset in zip(parts, offsets)])
    check_float32(vertices, "vertex (after the Transforms)", path)
    check_surface(vertices, faces, path)
    return Face(
        vertices=vertices,
        faces=faces,
        uv=np.concatenate(uvs) if uvs is not None else None,
        texture=texture,
        colors=np.concatenate([part.colors for part in parts]) if has_colors else None,
        meta=meta | ({"dropped": dropped} if dropped else {}),
    )


def _format_rows(values: np.ndarray, separator: str = ",") -> str:
    # One %-formatting call over the whole block: ~2-5x faster than formatting row by row.
    rows, columns = values.shape
    row = " ".join(["%.9g"] * columns) + separator + "\n"
    return ((row * rows) % tuple(values.astype(np.float64).ravel().tolist())).rstrip("\n")


def _format_polygons(faces: np.ndarray) -> str:
    return (("%d %d %d -1,\n" * len(faces)) % tuple(faces.ravel().tolist())).rstrip("\n")


def write_wrl(path: str | os.PathLike, face: Face, texture_path: str | os.PathLike | None = None) -> Path:
    """Write `face` as a VRML 2.0 file in the BU-3DFE style; return the path written.

    Like the BU-3DFE scans, coordinates shared by several vertices (the copies a reader makes at uv seams) are
    written once, and texCoordIndex (and colorIndex) list one index per polygon corner, so they differ from
    coordIndex wherever there is a seam; `read_wrl` splits those vertices again. Faces without uv and colours
    are written vertex for vertex. `face.texture`, if any, is saved to `texture_path` (default ``<stem>.bmp``
    next to the .wrl; BMP and PNG are lossless) and its path relative to the .wrl goes into the url.
    Numbers are written with 9 significant digits, which gives float32 values back exactly.
    """
    path = Path(path)
    vertices = np.asarray(face.vertices, dtype=np.float32)
    faces = np.asarray(face.faces, dtype=np.int64)
    if not np.isfinite(vertices).all():
        raise FormatError("cannot write a face whose vertices hold NaN or infinite values", path)
    if len(faces) == 0:
        raise FormatError("cannot write a face without triangles", path)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FormatError(
            f"cannot write: face index {int(faces.max())} out of range (mesh has {len(vertices)} vertices)", path
        )
    for name in ("uv", "colors"):
        values = getattr(face, name)
        if values is not None and len(values) != len(vertices):
            raise FormatError(f"cannot write: {len(values)} {name} rows for {len(vertices)} vertices", path)
    if face.uv is not None and not np.isfinite(face.uv).all():
        raise FormatError("cannot write a face whose uv hold NaN or infinite values", path)
    per_corner = face.uv is not None or face.colors is not None
    if per_corner:
        coords, first, position_of = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        coords, position_of = coords[order], rank[position_of.reshape(-1)]
    else:
        coords, position_of = vertices, np.arange(len(vertices))

    lines = ["#VRML V2.0 utf8", "", "# written by facet-vlm", "Shape {"]
    if face.texture is not None:
        texture_path = path.with_suffix(".bmp") if texture_path is None else Path(texture_path)
        texture_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(face.texture, dtype=np.uint8)).save(texture_path)
        url = Path(os.path.relpath(texture_path.resolve(), path.parent.resolve())).as_posix()
        lines += ["  appearance Appearance {", "    texture ImageTexture {", f'      url "{url}"', "    }", "  }"]
    lines += ["  geometry IndexedFaceSet {", "    solid FALSE", "    coord Coordinate {", "      point ["]
    lines += [_format_rows(coords), "      ]", "    }"]
    if face.uv is not None:
        lines += ["    texCoord TextureCoordinate {", "      point [", _format_rows(face.uv), "      ]", "    }"]
    if face.colors is not None:
        rgb = np.asarray(face.colors, dtype=np.float64) / 255.0
        lines += ["    color Color {", "      color [", _format_rows(rgb), "      ]", "    }"]
    lines += ["    coordIndex [", _format_polygons(position_of[faces]), "    ]"]
    if face.uv is not None:
        lines += ["    texCoordIndex [", _format_polygons(faces), "    ]"]
    if face.colors is not None:
        lines += ["    colorIndex [", _format_polygons(faces), "    ]"]
    lines += ["  }", "}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
