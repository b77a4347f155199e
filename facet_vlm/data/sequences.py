"""Frame selection for sequence rows (BU-4DFE, BP4D-Spontaneous, 4DME): which frame files a model sees.

A sequence row holds ``frames`` (frame paths in temporal order) and, where the data set annotates the clip,
``onset``/``apex``/``offset`` (indices into ``frames``; -1 or a missing column means "not annotated").

- `select_frame_indices` / `select_frames`: T frames of a clip, uniformly or onset–apex–offset (the index-level
  rule is the same as FACET-VLM's `sample_sequence_frames` (`facet_vlm.models.facet_vlm.modeling_facet_vlm`), kept
  free of torch here so that the data package stays light; a test checks that both agree).
- `apex_frame_index`: the apex frame for static models (CoupleFER, AFNet-M): the annotated apex, else the frame
  farthest from the first frame (see `frame_distance` for the geometric distance).
- `apex_rows`: a sequence data set turned into one static row per sequence (``path`` = its apex frame), which the
  existing still-scan path (`facet_vlm.data.cache.prepare_features`) takes unchanged.
- `collect_frames` / `sort_frames` / `sequence_frames`: frame files in numeric frame order, from a sequence folder
  (readers), a list of files or a ``.zip`` (pipeline inputs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetLayoutError, FacetVLMError

MODES = ("uniform", "onset_apex_offset", "apex")
SHORT_POLICIES = ("repeat", "refuse")
#: The last run of digits in a file name is its frame number (``000.wrl``, ``frame_0012.obj``, ``T1_0012.obj``).
FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class SequenceError(FacetVLMError):
    """A sequence cannot be used as asked: a missing, empty or corrupt frame, or too few frames."""


@dataclass
class FrameSelection:
    """How a sequence row becomes T frames (the sequence fields of a training config).

    Args:
        num_frames: T, frames per sample.
        mode: "uniform" (T frames evenly over onset..offset: the whole clip when not annotated),
            "onset_apex_offset" (half of them from the onset up to the apex, the rest after the apex up to the
            offset, always including the apex; an unannotated clip uses onset = first frame, offset = last frame,
            apex = the middle frame, exactly as `sample_sequence_frames`) or "apex" (the apex frame alone,
            repeated T times: the static baseline).
        short_policy: what a clip with fewer than T frames (between onset and offset) gets: "repeat" (frames are
            repeated, evenly, as `sample_sequence_frames` does) or "refuse" (`SequenceError` naming the clip).
        apex_from_geometry: in "apex" and "onset_apex_offset" mode, find the apex of an unannotated clip as the
            frame farthest from the first (`apex_frame_index`, reads frames) instead of taking the middle frame.
        max_apex_candidates: at most this many frames (spread evenly) are read to find a geometric apex.
    """

    num_frames: int = 8
    mode: str = "uniform"
    short_policy: str = "repeat"
    apex_from_geometry: bool = False
    max_apex_candidates: int = 16

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be at least 1, got {self.num_frames}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.short_policy not in SHORT_POLICIES:
            raise ConfigError(f"short_policy must be one of {SHORT_POLICIES}, got {self.short_policy!r}")
        if self.max_apex_candidates < 2:
            raise ConfigError(f"max_apex_candidates must be at least 2, got {self.max_apex_candidates}")


def frame_number(path: str | Path) -> int:
    """The frame number of a frame file: the last run of digits in its stem.

    Raises:
        DatasetLayoutError: when the stem holds no digit.
    """
    match = FRAME_NUMBER.search(Path(path).stem)
    if match is None:
        raise DatasetLayoutError("frame file name holds no frame number", path)
    return int(match.group(1))


def sort_frames(paths: Sequence[str | Path]) -> list[str]:
    """Frame paths in numeric frame order (``2.obj`` before ``10.obj``), whatever order they came in.

    Raises:
        DatasetLayoutError: a name without a frame number, or two files with the same frame number.
    """
    numbered = sorted((frame_number(path), str(path)) for path in paths)
    for (number, first), (next_number, second) in zip(numbered, numbered[1:]):
        if number == next_number:
            raise DatasetLayoutError(f"two frames carry frame number {number}: {first} and {second}", second)
    return [path for _, path in numbered]


def _spread(start: int, stop: int, count: int) -> list[int]:
    """`count` integers evenly from `start` to `stop` (both included), rounded as `sample_sequence_frames` does."""
    if count == 1:
        return [start]
    return [start + round(i * (stop - start) / (count - 1)) for i in range(count)]


def select_frame_indices(num_total: int, num_frames: int, mode: str = "uniform", onset: int = -1, apex: int = -1,
                         offset: int = -1, short_policy: str = "repeat", name: str | Path | None = None) -> list[int]:
    """Indices (into a clip of `num_total` frames, in temporal order) of the `num_frames` frames a model sees.

    `onset`/`apex`/`offset` are indices into the clip, -1 when not annotated (onset → 0, offset → last frame,
    apex → the middle of [onset, offset]). See `FrameSelection` for the modes and the short-clip policy. With no
    annotation, "uniform" and "onset_apex_offset" give exactly `sample_sequence_frames`' indices.

    Raises:
        SequenceError: an empty clip, an annotation outside the clip or out of order, or (``short_policy=
            "refuse"``) fewer frames between onset and offset than `num_frames`; `name` prefixes the message.
        ConfigError: an unknown mode or policy.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if short_policy not in SHORT_POLICIES:
        raise ConfigError(f"short_policy must be one of {SHORT_POLICIES}, got {short_policy!r}")
    if num_frames < 1:
        raise ConfigError(f"num_frames must be at least 1, got {num_frames}")
    if num_total < 1:
        raise SequenceError("the sequence holds no frames", name)
    last = num_total - 1
    first = 0 if onset < 0 else onset
    end = last if offset < 0 else offset
    if not 0 <= first <= end <= last:
        raise SequenceError(f"onset {onset} / offset {offset} are not in order inside the clip of {num_total} frames",
                            name)
    peak = (first + end) // 2 if apex < 0 else apex
    if not first <= peak <= end:
        raise SequenceError(f"apex {apex} is outside onset..offset ({first}..{end})", name)
    if mode == "apex":
        return [peak] * num_frames
    available = end - first + 1
    if available < num_frames and short_policy == "refuse":
        raise SequenceError(f"{available} frames between onset and offset, fewer than the {num_frames} asked for "
                            "(short_policy='refuse'; use 'repeat' to repeat frames)", name)
    if mode == "uniform":
        return _spread(first, end, num_frames) if num_frames > 1 else [(first + end) // 2]
    if num_frames == 1:
        return [peak]
    rising = (num_frames + 1) // 2
    falling = num_frames - rising
    indices = _spread(first, peak, rising) if rising > 1 else [peak]
    return indices + [round(peak + (i + 1) * (end - peak) / falling) for i in range(falling)]


def _annotation(row: dict[str, Any], key: str) -> int:
    value = row.get(key, -1)
    return -1 if value is None else int(value)


def select_frames(row: dict[str, Any], selection: FrameSelection) -> list[str]:
    """The T frame paths of a sequence row (``frames`` plus optional ``onset``/``apex``/``offset`` indices)."""
    frames = list(row["frames"])
    name = row.get("path") or (Path(frames[0]).parent if frames else None)
    apex = _annotation(row, "apex")
    if apex < 0 and selection.apex_from_geometry and selection.mode != "uniform" and frames:
        apex = apex_frame_index(frames, onset=_annotation(row, "onset"), offset=_annotation(row, "offset"),
                                max_candidates=selection.max_apex_candidates)
    indices = select_frame_indices(len(frames), selection.num_frames, selection.mode, _annotation(row, "onset"),
                                   apex, _annotation(row, "offset"), selection.short_policy, name)
    return [frames[i] for i in indices]


def _kabsch_residual(reference: np.ndarray, moving: np.ndarray) -> float:
    """Mean distance between corresponding points after the best rigid motion of `moving` onto `reference`."""
    ref_centre, mov_centre = reference.mean(0), moving.mean(0)
    a, b = reference - ref_centre, moving - mov_centre
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.linalg.norm(b @ rotation - a, axis=1).mean())


def _icp_residual(reference: np.ndarray, moving: np.ndarray, iterations: int = 15) -> float:
    """Mean nearest-neighbour distance from `moving` to `reference` after rigid ICP (point-to-point)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(reference)
    current = moving - moving.mean(0) + reference.mean(0)
    for _ in range(iterations):
        _, nearest = tree.query(current)
        target = reference[nearest]
        t_centre, c_centre = target.mean(0), current.mean(0)
        u, _, vt = np.linalg.svd((current - c_centre).T @ (target - t_centre))
        d = np.sign(np.linalg.det(u @ vt))
        current = (current - c_centre) @ (u @ np.diag([1.0, 1.0, d]) @ vt) + t_centre
    distances, _ = tree.query(current)
    return float(distances.mean())


def frame_distance(reference: Any, moving: Any, max_points: int = 2000) -> float:
    """Geometric distance (scan units, mm for the supported data sets) between two frames (`Face` objects).

    - Both frames have the same landmarks (names): the mean landmark displacement after the best rigid alignment
      (Kabsch) of the landmarks, so head motion does not count, only the deformation.
    - Else, the same triangles (one tracked mesh topology along the clip, so vertex i is the same skin point in
      every frame): the mean vertex displacement after Kabsch alignment of the vertices.
    - Else (scanner meshes whose vertices differ from frame to frame): the mean nearest-neighbour distance from
      `moving`'s vertices to `reference`'s after rigid ICP; at most `max_points` vertices (evenly strided) are used.
    """
    if (reference.landmarks is not None and moving.landmarks is not None
            and reference.landmark_names == moving.landmark_names and len(reference.landmarks) >= 3):
        return _kabsch_residual(reference.landmarks.astype(np.float64), moving.landmarks.astype(np.float64))
    if reference.num_vertices == moving.num_vertices and np.array_equal(reference.faces, moving.faces):
        return _kabsch_residual(reference.vertices.astype(np.float64), moving.vertices.astype(np.float64))
    ref = reference.vertices[:: max(1, reference.num_vertices // max_points)].astype(np.float64)
    mov = moving.vertices[:: max(1, moving.num_vertices // max_points)].astype(np.float64)
    return _icp_residual(ref, mov)


def apex_frame_index(frames: Sequence[str | Path], apex: int = -1, onset: int = -1, offset: int = -1,
                     max_candidates: int = 16) -> int:
    """Index of the apex frame of a clip: the annotated `apex` when there is one (>= 0), else the frame (between
    onset and offset) farthest from the onset frame by `frame_distance`.

    Only up to `max_candidates` frames, spread evenly over onset..offset, are read (a BP4D task has hundreds of
    frames); the apex found is the farthest among them. The result is remembered for the rest of the process (per
    candidate frames and their modification times), so several samplings of one clip read its frames once.

    Raises:
        SequenceError: a frame that cannot be read (the message names it and the problem).
    """
    if apex >= 0:
        return apex
    if not frames:
        raise SequenceError("the sequence holds no frames")
    from ..io import read_face

    first = 0 if onset < 0 else onset
    end = len(frames) - 1 if offset < 0 else offset
    candidates = sorted(set(_spread(first, end, min(max_candidates, end - first + 1))))
    key = tuple((str(frames[i]), _mtime(frames[i])) for i in candidates)
    if key not in _APEX_MEMO:
        faces = {index: read_sequence_frame(frames[index], read_face) for index in candidates}
        distances = {index: frame_distance(faces[first], faces[index]) for index in candidates if index != first}
        _APEX_MEMO[key] = max(distances, key=distances.get) if distances else first
    return _APEX_MEMO[key]


#: Geometric apexes found in this process, keyed by the candidate frames and their modification times.
_APEX_MEMO: dict[tuple, int] = {}


def _mtime(path: str | Path) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return -1


def read_sequence_frame(path: str | Path, reader: Any = None, **options: Any) -> Any:
    """Read one frame with `facet_vlm.io.read_face`; a missing, empty or corrupt frame raises `SequenceError`
    naming the frame file and the problem."""
    if reader is None:
        from ..io import read_face as reader
    path = Path(path)
    if not path.is_file():
        raise SequenceError("frame file is missing", path)
    if path.stat().st_size == 0:
        raise SequenceError("frame file is empty", path)
    try:
        return reader(path, **options)
    except FacetVLMError as error:
        raise SequenceError(f"frame cannot be read: {type(error).__name__}: {error.reason}", path) from error


def apex_rows(dataset, selection: FrameSelection | None = None):
    """One static row per sequence for static models (CoupleFER, AFNet-M): ``path`` becomes the apex frame
    (the annotated apex, else the frame farthest from the first: `apex_frame_index`); ``sequence_path`` keeps the
    sequence folder and ``apex_index`` the chosen index. The result goes to `prepare_features` like still scans."""
    selection = selection or FrameSelection(num_frames=1, mode="apex", apex_from_geometry=True)
    chosen, indices = [], []
    for row in dataset:
        frames = list(row["frames"])
        index = apex_frame_index(frames, _annotation(row, "apex"), _annotation(row, "onset"),
                                 _annotation(row, "offset"), selection.max_apex_candidates)
        chosen.append(frames[index])
        indices.append(index)
    out = dataset.rename_column("path", "sequence_path") if "path" in dataset.column_names else dataset
    return out.add_column("path", chosen).add_column("apex_index", indices)


def collect_frames(folder: Path, pattern: re.Pattern, bad_files: list[str]) -> list[str]:
    """The frame files of one sequence folder, in numeric frame order (`frame_number`), reporting the rest.

    A file is a frame when its name fully matches `pattern`. A file sharing the stem of a frame (its texture,
    ``.mtl`` or landmark file) belongs to that frame; every other file, a sub-folder, and a second file with a
    frame number already taken (``1.obj`` beside ``001.obj``; the first by name is kept) go to `bad_files` as
    ``"path: reason"``.
    """
    entries = sorted(folder.iterdir())
    frames = [path for path in entries if path.is_file() and pattern.fullmatch(path.name)]
    stems = {path.stem for path in frames}
    for path in entries:
        if path.is_dir():
            bad_files.append(f"{path}: unexpected folder inside a sequence folder")
        elif path not in frames and path.stem not in stems:
            bad_files.append(f"{path}: not a frame (frame names must match {pattern.pattern!r})")
    by_number: dict[int, Path] = {}
    for path in frames:
        match = FRAME_NUMBER.search(path.stem)
        if match is None:
            bad_files.append(f"{path}: frame name holds no frame number; not indexed")
            continue
        number = int(match.group(1))
        if number in by_number:
            bad_files.append(f"{path}: frame number {number} already taken by {by_number[number].name}; not indexed")
        else:
            by_number[number] = path
    return [str(by_number[number]) for number in sorted(by_number)]


def sequence_frames(source: str | Path | Sequence[str | Path], extract_to: str | Path | None = None,
                    max_zip_bytes: int = 4 << 30) -> list[str]:
    """The frame files of one sequence given as a folder, a list of frame files or a ``.zip``, in frame order.

    This is what the pipeline, ``scripts/predict.py`` and the Space take for a sequence.

    - A folder: its files that `facet_vlm.io.read_face` reads (see `collect_frames`; files that are neither
      frames nor a frame's companion are named in a warning).
    - A list: the files themselves, sorted by frame number (`sort_frames`); each must exist and be non-empty.
    - A ``.zip``: extracted into `extract_to` (default: a new temporary folder the caller may delete), then read
      as a folder: the one folder of the archive that holds frames. Entries that would land outside the folder
      and archives larger than `max_zip_bytes` uncompressed are refused.

    Raises:
        SequenceError: no frames, a missing or empty frame, an unsafe or oversized archive.
    """
    import tempfile
    import warnings
    import zipfile

    from ..io import SUPPORTED_EXTENSIONS

    pattern = re.compile(r".*\d+.*(" + "|".join(re.escape(ext) for ext in SUPPORTED_EXTENSIONS) + ")",
                         re.IGNORECASE)
    if not isinstance(source, (str, Path)):
        frames = sort_frames(source)
        for frame in frames:
            path = Path(frame)
            if not path.is_file() or path.stat().st_size == 0:
                raise SequenceError("frame file is " + ("empty" if path.is_file() else "missing"), path)
        if not frames:
            raise SequenceError("the list of frames is empty")
        return frames
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".zip":
        target = Path(extract_to) if extract_to is not None else Path(tempfile.mkdtemp(prefix="facet_vlm_seq_"))
        try:
            with zipfile.ZipFile(source) as archive:
                entries = archive.infolist()
                if sum(entry.file_size for entry in entries) > max_zip_bytes:
                    raise SequenceError(f"archive unpacks to more than {max_zip_bytes} bytes", source)
                for entry in entries:
                    destination = (target / entry.filename).resolve()
                    if not destination.is_relative_to(target.resolve()):
                        raise SequenceError(f"archive entry {entry.filename!r} points outside the folder", source)
                archive.extractall(target)
        except zipfile.BadZipFile as error:
            raise SequenceError(f"not a readable .zip: {error}", source) from None
        folders = sorted({path.parent for path in target.rglob("*") if path.is_file() and pattern.fullmatch(
            path.name) and "__MACOSX" not in path.parts})
        if len(folders) != 1:
            raise SequenceError(f"the archive must hold the frames of one sequence in one folder; frames found in "
                                f"{len(folders)} folders", source)
        source = folders[0]
    if not source.is_dir():
        raise SequenceError("a sequence must be a folder, a .zip or a list of frame files", source)
    skipped: list[str] = []
    frames = collect_frames(source, pattern, skipped)
    if skipped:
        warnings.warn(f"{source}: {len(skipped)} files are not frames and were left out, e.g. {skipped[0]}",
                      stacklevel=2)
    if not frames:
        raise SequenceError(f"no frame files (numbered {', '.join(SUPPORTED_EXTENSIONS)} files)", source)
    return frames
