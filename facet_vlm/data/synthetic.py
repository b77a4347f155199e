"""The embedded default data set: synthetic 3D faces written in the real BU-3DFE, Bosphorus and BU-4DFE layouts.

No facial-expression data set can be downloaded (all are licensed), so `generate` writes a stand-in that exercises
the real readers end to end: many subjects with distinct face shapes and skin tones (see `face_model`), the six
basic expressions built from facial action units at four intensities plus neutral, scanner noise, small holes and
pose jitter. ``nuisance="hard"`` (`NUISANCE_PRESETS`) is a harder evaluation setting: per-subject expression styles,
strong left/right asymmetry, movements that are no expression (talking, blinks, ...), +-12 degree pose, more noise
and larger holes. ``nuisance="pretrain"`` varies what a real population and its scanners vary, for pretraining on
many subjects: face shape and appearance, mesh density and topology (irregular meshes, decimation, holes), scanner
noise, pose, lighting and per-subject expression styles.

Layout under ``out_dir`` (one folder per format, each exactly like the real release)::

    bu3dfe/F0001/F0001_HA04WH_F3D.wrl  (+ .bmp texture, + .bnd 83 landmarks)    NE00 for neutral
    bosphorus/bs000/bs000_E_HAPPY_0.bnt  (+ .png texture, + .lm3 landmarks)      bs000_N_N_0 for neutral
    bu4dfe/F001/Happy/000.wrl  (+ 000.bmp)                                         neutral -> apex -> neutral

Every subject has its own random stream derived from ``(seed, subject index)``, so a subject's scans do not depend on
`num_proc` or on how many subjects are generated, and a run can be resumed: a subject folder that holds a completion
marker written with the same settings is skipped.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..errors import ConfigError
from ..labels import BASIC_EXPRESSIONS, BU3DFE_CODES, BU4DFE_FOLDERS
from ..progress import progress_bar
from .face_model import (
    BND_STANDARD_INDEX,
    FaceModel,
    Nuisance,
    SyntheticScan,
    add_movement,
    jitter_activations,
    pose_matrix,
    ripple,
    styled_activations,
    subject_style,
)
from .subjects import (
    SubjectIdentity,
    SyntheticSettings,
    as_nuisance,
    subject_identity,
    subject_model,
)

FORMATS = ("bu3dfe", "bosphorus", "bu4dfe")
#: Name of the completion marker left in every finished subject folder.
MARKER = ".facet_vlm_complete.json"
#: File a run holds locked (``fcntl.flock``) while it writes a subject folder (`_subject_lock`).
LOCK_FILE = ".facet_vlm_generating.lock"
#: Bumped whenever the generator's output changes, so that stale folders are not mistaken for complete ones.
GENERATOR_VERSION = 1

@lru_cache(maxsize=4)
def motion_calibration(motion: str):
    """The motion calibration a generator's ``motion`` names (`facet_vlm.data.calibrate.load_calibration`), None
    for the generator's own AU expression model; read once per process."""
    from .calibrate import load_calibration

    return load_calibration(motion) if motion else None


_EXPRESSION_ID = {name: i for i, name in enumerate(("neutral",) + BASIC_EXPRESSIONS)}
_CODE_OF = {name: code for code, name in BU3DFE_CODES.items()}
_BOSPHORUS_CODE_OF = {"anger": "ANGER", "disgust": "DISGUST", "fear": "FEAR", "happiness": "HAPPY",
                      "sadness": "SADNESS", "surprise": "SURPRISE"}
_BU4DFE_FOLDER_OF = {name: folder for folder, name in BU4DFE_FOLDERS.items()}
#: Bosphorus .lm3 landmarks beyond the standard names, taken from the 83-point layout.
_BOSPHORUS_EXTRA = {"Middle right eyebrow": 18, "Middle left eyebrow": 28, "Nose saddle right": 37,
                    "Nose saddle left": 45, "Right nose peak": 39, "Left nose peak": 43, "Upper lip inner middle": 62,
                    "Lower lip inner middle": 66}


@dataclass
class SyntheticSummary:
    """What `generate` wrote: counts per format, mesh sizes and disk use; `table()` formats them."""

    root: Path
    roots: dict[str, Path]
    subjects: int
    scans: dict[str, int]
    counts: dict[str, dict[tuple[str, int], int]]
    vertices: dict[str, tuple[int, float, int]]
    triangles: dict[str, tuple[int, float, int]]
    disk_bytes: int
    seconds: float
    skipped_subjects: int
    settings: SyntheticSettings

    def table(self) -> str:
        """A plain-text report: subjects, scans per format, expression x intensity counts, mesh sizes, disk size."""
        lines = [f"Synthetic 3D face data set at {self.root}",
                 f"  subjects: {self.subjects} (seed {self.settings.seed}; {self.skipped_subjects} already complete)",
                 f"  generated in {self.seconds:.1f} s, {self.disk_bytes / 2 ** 20:.1f} MiB on disk"]
        for fmt, count in self.scans.items():
            vmin, vmean, vmax = self.vertices[fmt]
            tmin, tmean, tmax = self.triangles[fmt]
            lines += ["", f"[{fmt}] {self.roots[fmt]}", f"  scans: {count}",
                      f"  vertices per scan: {vmin}..{vmax} (mean {vmean:.0f}); "
                      f"triangles: {tmin}..{tmax} (mean {tmean:.0f})"]
            levels = sorted({level for _, level in self.counts[fmt]})
            header = "  " + "expression".ljust(12) + "".join(
                ("neutral" if level == 0 else "sequence" if level < 0 else f"I{level}").rjust(9) for level in levels)
            lines.append(header)
            for expression in BASIC_EXPRESSIONS + ("neutral",):
                row = [self.counts[fmt].get((expression, level), 0) for level in levels]
                if any(row):
                    lines.append("  " + expression.ljust(12) + "".join(str(n).rjust(9) for n in row))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def generate(
    out_dir: str | os.PathLike,
    subjects: int = 100,
    seed: int = 0,
    formats: Sequence[str] = ("bu3dfe",),
    intensities: int = 4,
    include_neutral: bool = True,
    num_proc: int = 1,
    progress: bool = True,
    sequence_frames: int = 12,
    vertices: int = 6000,
    texture_size: int = 512,
    nuisance: Nuisance | str | dict | None = None,
    motion: str | os.PathLike | None = None,
) -> SyntheticSummary:
    """Write a synthetic 3D facial-expression data set in the real layouts (see the module docstring).

    Args:
        out_dir: root folder; one sub-folder per format (``bu3dfe``, ``bosphorus``, ``bu4dfe``).
        subjects: number of people (BU-3DFE has 100: 56 women, 44 men).
        seed: seeds everything; subject i's scans depend only on (seed, i).
        formats: any of "bu3dfe" (6 expressions x `intensities` levels + neutral per subject), "bosphorus" (6
            expressions at the top level + neutral) and "bu4dfe" (6 sequences of `sequence_frames` frames).
        intensities: intensity levels 1..4 (level k scales the AU amplitudes by k / intensities).
        include_neutral: also write the neutral scan (BU-3DFE ``NE00``, Bosphorus ``N_N_0``).
        num_proc: worker processes (a pool over subjects).
        progress: show a tqdm progress bar.
        sequence_frames: frames per BU-4DFE sequence (neutral -> apex -> neutral).
        vertices: approximate vertices per scan (also sets the range-image resolution).
        texture_size: side of the square texture images.
        nuisance: scanner, session and subject variation (noise, holes, pose jitter, expression styles, ...):
            a `Nuisance`, a preset name ("hard": the hard evaluation setting; "pretrain": the varied population for
            pretraining; see `NUISANCE_PRESETS`) or a dict of fields, optionally with "preset"; `Nuisance()` by
            default.
        motion: None (default) moves faces with the generator's AU expression model. "bu4dfe" (the calibration
            fitted on real BU-4DFE motion, `facet_vlm.data.calibrate.CALIBRATION_FILE`) or the path of a saved
            `MotionCalibration` moves them with calibrated motion instead (`calibrated_scan`; formats "bu3dfe" and
            "bu4dfe" only): per subject and expression a displacement field drawn from the calibration, scaled by
            ``level / intensities``; sequences follow the calibrated onset / apex / offset timing. The ``.bnd`` files
            then hold the 83 points in the real BU-4DFE layout (the generator's own layout orders the first eye and
            brow the other way and has no nose outline), and BU-4DFE frames get a ``.bnd`` too. The nuisance's
            expression fields (AU jitter and leak, styles, asymmetry, movements) are not used: the calibration holds
            how people vary; pose, noise, holes and the mesh fields apply as usual.

    Returns:
        A `SyntheticSummary` (print ``summary.table()``); ``summary.roots[fmt]`` is what the loaders take.

    Raises:
        ConfigError: on a bad argument, or when `out_dir` holds subjects generated with other settings.
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"formats must be a non-empty subset of {FORMATS}, got {tuple(formats)}")
    if subjects < 1:
        raise ConfigError(f"subjects must be at least 1, got {subjects}")
    if num_proc < 1:
        raise ConfigError(f"num_proc must be at least 1, got {num_proc}")
    settings = SyntheticSettings(seed=seed, intensities=intensities, include_neutral=include_neutral,
                                 sequence_frames=sequence_frames, vertices=vertices, texture_size=texture_size,
                                 nuisance=as_nuisance(nuisance), motion=str(motion or ""))
    if settings.motion and "bosphorus" in formats:
        raise ConfigError("motion= (calibrated motion) writes the bu3dfe and bu4dfe formats, not bosphorus")
    motion_calibration(settings.motion)  # noqa: B018  (read the calibration now: a bad file fails before any subject is written)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    formats = tuple(dict.fromkeys(formats))
    start = time.perf_counter()
    tasks = [(str(root), index, formats, settings) for index in range(subjects)]
    results = _run(tasks, num_proc, progress)
    summary = _summarise(root, formats, settings, results, time.perf_counter() - start)
    _write_atomic(root / "synthetic.json", json.dumps(
        {"generator_version": GENERATOR_VERSION, "subjects": subjects, "formats": list(formats),
         "settings": settings.to_json(), "scans": summary.scans}, indent=2))
    return summary


def _run(tasks: list, num_proc: int, progress: bool) -> list[dict]:
    bar = progress_bar(total=len(tasks), desc="synthetic subjects", unit="subject", enabled=progress)
    results = []
    try:
        if num_proc == 1 or len(tasks) == 1:
            for task in tasks:
                results.append(_generate_subject(task))
                bar.update()
        else:
            with multiprocessing.get_context().Pool(min(num_proc, len(tasks))) as pool:
                for result in pool.imap_unordered(_generate_subject, tasks):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return sorted(results, key=lambda item: item["index"])


def _generate_subject(task: tuple) -> dict:
    """Write every requested format of one subject (skipping finished ones); return its per-format stats."""
    root, index, formats, settings = task
    identity = subject_identity(index, settings.seed)
    stats: dict = {"index": index, "skipped": True}
    model = None
    for fmt in formats:
        folder = Path(root) / fmt / getattr(identity, fmt)
        expected = _marker_content(fmt, identity, settings)
        done = _read_marker(folder, expected)
        if done is None:
            with _subject_lock(folder):
                done = _read_marker(folder, expected)  # another run may have finished it while we waited
                if done is None:
                    if model is None:
                        _, model = subject_model(index, settings)
                    stats["skipped"] = False
                    done = _WRITERS[fmt](folder, model, identity, settings)
                    _write_atomic(folder / MARKER, json.dumps({**expected, "stats": done}))
        stats[fmt] = done
    return stats


@contextlib.contextmanager
def _subject_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a subject folder while it is written, so that two runs generating the same set at
    once (two trainings started together with the same synthetic options) do not write one folder twice or read a
    file the other is rewriting: the second waits, then finds the first's marker and skips the subject. The lock
    is `fcntl.flock` on ``LOCK_FILE`` in the folder, released when the process ends, even on a crash; where
    `fcntl` is missing (Windows) there is no lock."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: a reader sees the old file or
    the new one, never a part."""
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def _marker_content(fmt: str, identity: SubjectIdentity, settings: SyntheticSettings) -> dict:
    content = {"generator_version": GENERATOR_VERSION, "format": fmt, "subject_index": identity.index,
               **settings.to_json()}
    if fmt != "bu4dfe":
        content.pop("sequence_frames")
    return content


def _read_marker(folder: Path, expected: dict) -> dict | None:
    """The stats of a finished subject folder, None when unfinished; ConfigError when made with other settings."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stats = content.pop("stats", None)
    if content != expected:
        changed = sorted(key for key in set(content) | set(expected) if content.get(key) != expected.get(key))
        raise ConfigError(
            f"this folder was generated with other settings ({', '.join(changed)} differ); generate into a new "
            "folder or delete the old one", folder)
    return stats


def _scan_plan(settings: SyntheticSettings, top_only: bool) -> list[tuple[str, int]]:
    levels = [settings.intensities] if top_only else list(range(1, settings.intensities + 1))
    plan = [(expression, level) for expression in BASIC_EXPRESSIONS for level in levels]
    return plan + ([("neutral", 0)] if settings.include_neutral else [])


def _record(stats: dict, face, expression: str, level: int, files: Iterable[Path]) -> None:
    stats["counts"].append([expression, level])
    stats["vertices"].append(face.num_vertices)
    stats["triangles"].append(face.num_faces)
    stats["bytes"] += sum(path.stat().st_size for path in files)


def _new_stats() -> dict:
    return {"counts": [], "vertices": [], "triangles": [], "bytes": 0}


def make_scan(index: int, expression: str, level: int, settings: SyntheticSettings | None = None,
              fmt: str = "bu3dfe", model: FaceModel | None = None) -> SyntheticScan:
    """The in-memory scan that `generate` writes for subject `index`, `expression` at intensity `level` (0 for
    neutral) in format "bu3dfe" or "bosphorus"; pass `model` (from `subject_model`) to skip rebuilding it."""
    settings = settings or SyntheticSettings()
    if fmt not in ("bu3dfe", "bosphorus"):
        raise ConfigError(f"make_scan makes static scans: fmt must be 'bu3dfe' or 'bosphorus', got {fmt!r}")
    if expression not in _EXPRESSION_ID:
        raise ConfigError(f"unknown expression {expression!r}; known: {', '.join(_EXPRESSION_ID)}")
    if not (level == 0 if expression == "neutral" else 1 <= level <= settings.intensities):
        raise ConfigError(f"level {level} is invalid for {expression} (0 for neutral, else 1..{settings.intensities})")
    identity = subject_identity(index, settings.seed)
    if model is None:
        _, model = subject_model(index, settings)
    keys = (_EXPRESSION_ID[expression], level) if fmt == "bu3dfe" else (_EXPRESSION_ID[expression],)
    rng = np.random.default_rng([settings.seed, index, 10 + FORMATS.index(fmt), *keys])
    meta = {"subject": getattr(identity, fmt), "expression": expression, "intensity": level, "race": identity.race,
            "sex": identity.sex, "format": fmt}
    nuisance = settings.nuisance
    amount = settings.amount(level) if expression != "neutral" else 0.0
    if motion_calibration(settings.motion) is not None:
        scan = _calibrated_scan(index, expression, amount, rng, settings, model, meta)
    else:
        acts = jitter_activations(styled_activations(expression, amount, _style(settings, index, expression)), rng,
                                  nuisance)
        acts, movement = add_movement(acts, np.random.default_rng([settings.seed, index, 20, *keys]), nuisance)
        if movement:
            meta["movement"] = movement
        asymmetry = None
        if nuisance.subject_asymmetry:
            asymmetry = _asymmetry(rng, nuisance, _subject_asymmetry(settings, index))
        scan = model.scan(acts, rng, nuisance, asymmetry=asymmetry, meta=meta)
    if nuisance.ripple_mm > 0:  # its own random stream, so that the other draws stay as they are
        stripes = np.random.default_rng([settings.seed, index, 22, *keys])
        state = stripes.bit_generator.state
        vertices = scan.face.vertices.copy()
        vertices[:, 2] += ripple(stripes, vertices[:, :2].astype(np.float64), nuisance.ripple_mm)
        scan.face.vertices = vertices.astype(np.float32)
        stripes.bit_generator.state = state  # the same stripes on the range image
        grid = scan.xyz_grid
        grid[..., 2] += ripple(stripes, grid[..., :2].reshape(-1, 2).astype(np.float64),
                               nuisance.ripple_mm).reshape(grid.shape[:2]).astype(np.float32)
    decimation = np.random.default_rng([settings.seed, index, 21, *keys])
    if fmt == "bu3dfe" and nuisance.decimate_prob > 0 and decimation.random() < nuisance.decimate_prob:
        from ..geometry.perturb import decimate

        keep = float(decimation.uniform(*nuisance.decimate_keep))
        scan.face = decimate(scan.face, keep, seed=int(decimation.integers(2 ** 31)), max_edge_factor=1.5)
        scan.face.meta["decimated"] = round(keep, 3)
    return scan


def calibrated_displacement(settings: SyntheticSettings, index: int, expression: str) -> np.ndarray:
    """Subject `index`'s apex displacement of `expression` under calibrated motion (its own random stream, drawn
    once per subject and expression: how this person shows it); zeros for neutral."""
    if expression == "neutral":
        return np.zeros((83, 3))
    rng = np.random.default_rng([settings.seed, index, 7, _EXPRESSION_ID[expression]])
    return motion_calibration(settings.motion).expressions[expression].sample(rng)


def _calibrated_scan(index: int, expression: str, amount: float, rng: np.random.Generator,
                     settings: SyntheticSettings, model: FaceModel, meta: dict) -> SyntheticScan:
    from .calibrate import calibrated_scan

    displacement = amount * calibrated_displacement(settings, index, expression)
    return calibrated_scan(model, displacement, rng, motion_calibration(settings.motion), settings.nuisance, meta=meta)


def _style(settings: SyntheticSettings, index: int, expression: str) -> dict[int, float]:
    """Subject `index`'s style of `expression` (its own random stream, so scans without styles are unchanged)."""
    if not settings.nuisance.has_style:
        return {}
    rng = np.random.default_rng([settings.seed, index, 3, _EXPRESSION_ID[expression]])
    return subject_style(expression, rng, settings.nuisance)


def _subject_asymmetry(settings: SyntheticSettings, index: int) -> float:
    limit = settings.nuisance.subject_asymmetry
    return float(np.random.default_rng([settings.seed, index, 4]).uniform(-limit, limit))


def _asymmetry(rng: np.random.Generator, nuisance: Nuisance, bias: float) -> float:
    """Per-scan asymmetry draw plus the subject's bias, kept inside (-0.9, 0.9) so that no side moves backwards."""
    return float(np.clip(rng.uniform(-nuisance.asymmetry, nuisance.asymmetry) + bias, -0.9, 0.9))


def _write_bu3dfe(folder: Path, model: FaceModel, identity: SubjectIdentity, settings: SyntheticSettings) -> dict:
    from ..io import write_bnd, write_wrl

    stats = _new_stats()
    for expression, level in _scan_plan(settings, top_only=False):
        stem = f"{identity.bu3dfe}_{_CODE_OF[expression]}{level:02d}{identity.race}_F3D"
        face = make_scan(identity.index, expression, level, settings, "bu3dfe", model).face
        wrl = folder / f"{stem}.wrl"
        write_wrl(wrl, face)
        marks = face.landmarks[:83]
        _, nearest = cKDTree(face.vertices).query(marks)  # BU-3DFE lists the nearest vertex of each landmark
        write_bnd(folder / f"{stem}.bnd", marks, vertex_indices=nearest)
        _record(stats, face, expression, level, [wrl, wrl.with_suffix(".bmp"), wrl.with_suffix(".bnd")])
    return stats


def _write_bosphorus(folder: Path, model: FaceModel, identity: SubjectIdentity, settings: SyntheticSettings) -> dict:
    from PIL import Image

    from ..io import write_bnt, write_lm3

    stats = _new_stats()
    for expression, level in _scan_plan(settings, top_only=True):
        code = "N_N" if expression == "neutral" else f"E_{_BOSPHORUS_CODE_OF[expression]}"
        stem = f"{identity.bosphorus}_{code}_0"
        scan = make_scan(identity.index, expression, level, settings, "bosphorus", model)
        bnt, png, lm3 = (folder / f"{stem}{suffix}" for suffix in (".bnt", ".png", ".lm3"))
        write_bnt(bnt, scan.xyz_grid, scan.uv_grid, image_name=png.name)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scan.face.texture).save(png)
        names = scan.face.landmark_names
        standard = [name for name in BND_STANDARD_INDEX]
        rows = [names.index(name) for name in standard] + list(_BOSPHORUS_EXTRA.values())
        write_lm3(lm3, scan.face.landmarks[rows], standard + list(_BOSPHORUS_EXTRA))
        _record(stats, scan.face, expression, level, [bnt, png, lm3])
    return stats


def _write_bu4dfe(folder: Path, model: FaceModel, identity: SubjectIdentity, settings: SyntheticSettings) -> dict:
    from ..io import write_wrl

    stats = _new_stats()
    nuisance = settings.nuisance
    frames = settings.sequence_frames
    centre = (0.0, model.params.eye_y - 10.0, -80.0)
    for expression in BASIC_EXPRESSIONS:
        rng = np.random.default_rng([settings.seed, identity.index, 10 + FORMATS.index("bu4dfe"),
                                     _EXPRESSION_ID[expression]])
        if motion_calibration(settings.motion) is not None:
            _write_calibrated_sequence(folder, model, identity, settings, expression, rng, stats)
            continue
        apex = jitter_activations(styled_activations(expression, 1.0, _style(settings, identity.index, expression)),
                                  rng, nuisance)
        if nuisance.subject_asymmetry:
            asymmetry = _asymmetry(rng, nuisance, _subject_asymmetry(settings, identity.index))
        else:
            asymmetry = float(rng.uniform(-nuisance.asymmetry, nuisance.asymmetry))
        limits = np.array([*nuisance.pose_deg, *[nuisance.translate_mm] * 3])
        start, end = (rng.uniform(-1.0, 1.0, 6) * limits for _ in range(2))
        sequence = folder / _BU4DFE_FOLDER_OF[expression]
        for frame in range(frames):
            t = frame / (frames - 1)
            amount = float(np.sin(np.pi * t))
            yaw, pitch, roll, *translation = start + (end - start) * t
            pose = pose_matrix(*np.radians([yaw, pitch, roll]), translation, centre)
            meta = {"subject": identity.bu4dfe, "expression": expression, "frame": frame, "format": "bu4dfe"}
            acts = {au: value * amount for au, value in apex.items()}
            face = model.scan(acts, rng, nuisance, pose=pose, asymmetry=asymmetry, meta=meta).face
            wrl = sequence / f"{frame:03d}.wrl"
            write_wrl(wrl, face)
            _record(stats, face, expression, -1, [wrl, wrl.with_suffix(".bmp")])
    return stats


def _write_calibrated_sequence(folder: Path, model: FaceModel, identity: SubjectIdentity, settings: SyntheticSettings,
                               expression: str, rng: np.random.Generator, stats: dict) -> None:
    """One BU-4DFE sequence under calibrated motion: the subject's apex displacement times the calibrated timing
    profile, a pose moving smoothly from one random pose to another; a ``.bnd`` (real layout) beside each frame."""
    from ..io import write_bnd, write_wrl
    from .calibrate import calibrated_scan

    nuisance = settings.nuisance
    apex = calibrated_displacement(settings, identity.index, expression)
    profile = motion_calibration(settings.motion).expressions[expression].profile(settings.sequence_frames, rng)
    limits = np.array([*nuisance.pose_deg, *[nuisance.translate_mm] * 3])
    start, end = (rng.uniform(-1.0, 1.0, 6) * limits for _ in range(2))
    centre = (0.0, model.params.eye_y - 10.0, -80.0)
    sequence = folder / _BU4DFE_FOLDER_OF[expression]
    for frame, amount in enumerate(profile):
        t = frame / (len(profile) - 1)
        yaw, pitch, roll, *translation = start + (end - start) * t
        pose = pose_matrix(*np.radians([yaw, pitch, roll]), translation, centre)
        meta = {"subject": identity.bu4dfe, "expression": expression, "frame": frame, "format": "bu4dfe"}
        face = calibrated_scan(model, amount * apex, rng, motion_calibration(settings.motion), nuisance, pose=pose,
                               meta=meta).face
        wrl = sequence / f"{frame:03d}.wrl"
        write_wrl(wrl, face)
        write_bnd(wrl.with_suffix(".bnd"), face.landmarks[:83])
        _record(stats, face, expression, -1, [wrl, wrl.with_suffix(".bmp"), wrl.with_suffix(".bnd")])


_WRITERS = {"bu3dfe": _write_bu3dfe, "bosphorus": _write_bosphorus, "bu4dfe": _write_bu4dfe}


def _summarise(root: Path, formats: tuple[str, ...], settings: SyntheticSettings, results: list[dict],
               seconds: float) -> SyntheticSummary:
    scans, counts, vertices, triangles = {}, {}, {}, {}
    disk = 0
    for fmt in formats:
        per_format = [result[fmt] for result in results]
        counter: Counter = Counter()
        sizes_v, sizes_t = [], []
        for stats in per_format:
            counter.update((expression, int(level)) for expression, level in stats["counts"])
            sizes_v += stats["vertices"]
            sizes_t += stats["triangles"]
            disk += stats["bytes"]
        if fmt == "bu4dfe":  # count sequences, not frames
            counter = Counter({key: value // settings.sequence_frames for key, value in counter.items()})
        scans[fmt] = len(sizes_v)
        counts[fmt] = dict(counter)
        vertices[fmt] = (int(min(sizes_v)), float(np.mean(sizes_v)), int(max(sizes_v)))
        triangles[fmt] = (int(min(sizes_t)), float(np.mean(sizes_t)), int(max(sizes_t)))
    return SyntheticSummary(root=root, roots={fmt: root / fmt for fmt in formats}, subjects=len(results),
                            scans=scans, counts=counts, vertices=vertices, triangles=triangles, disk_bytes=disk,
                            seconds=seconds, skipped_subjects=sum(result["skipped"] for result in results),
                            settings=settings)


__all__ = ["FORMATS", "MARKER", "SubjectIdentity", "SyntheticSettings", "SyntheticSummary", "as_nuisance",
           "generate", "make_scan", "motion_calibration", "subject_identity", "subject_model"]
