"""MAHNOB-HCI (emotion elicitation part): sessions with a colour face video, ratings and BioSemi signals.

Layout read (as distributed)::

    root/Sessions/<n>/session.xml      <session sessionId="10" feltVlnc="3" feltArsl="6" feltEmo="0" feltCtrl="2"
                                       feltPred="9" cutLenSec="136.5244" vidRate="60.9708" mediaFile="53.avi" ...>
                                       <subject id="1" .../>
                                       <track type="Video" color="1" camera="1" filename="..._C1 trigger ....avi"/>
                                       ... <track type="Physiological" filename="Part_1_S_Trial5_emotion.bdf"/>
                                       </session>
    root/Sessions/<n>/P1-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_10.avi
    root/Sessions/<n>/Part_1_S_Trial5_emotion.bdf

Session attributes kept: ``feltVlnc``, ``feltArsl`` (valence and arousal, 1..9), ``feltEmo`` (the emotion tag),
``feltCtrl`` and ``feltPred`` (felt control and predictability, 1..9), ``mediaFile`` (the stimulus clip shown),
``cutLenSec`` (its length in seconds) and ``vidRate`` (the frame rate of the session's videos).

Colour-video match rule, first that applies: (1) a ``<track type="Video">`` with ``color="1"`` or whose
``filename`` contains ``"C1 trigger"`` (camera C1 is the colour camera that carries the trigger) and exists;
(2) a file matching ``*C1 trigger*.avi`` in the session folder; (3) the only ``*.avi`` there. A session whose colour
video is missing (many users download the labels, or only some sessions' videos) keeps its labels with
``video_path`` None and is reported in one warning that names the sessions and the file the XML names; the load goes
on. ``labels_only=True`` does not look for any file but ``session.xml``. The BDF is the
``<track type="Physiological">`` file, else the only ``*.bdf`` (it may be absent). Sessions without
``feltVlnc``/``feltArsl`` are skipped with a warning that counts them.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetLayoutError, FormatError
from ..io.bdf import read_bdf, read_bdf_labels
from ..physio.rppg import ecg_heart_rate

#: MAHNOB-HCI ``feltEmo`` code -> index into ``facet_vlm.labels.LABEL_SETS["mahnob_emotions"]``.
FELT_EMO_TO_INDEX = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 11: 7, 12: 8}
#: MAHNOB-HCI ECG leads (BioSemi external electrodes): right arm, left arm, left leg.
ECG_CHANNELS = ("EXG1", "EXG2", "EXG3")
COLOUR_CAMERA_TAG = "C1 trigger"
#: The self-assessment scale of MAHNOB-HCI and DEAP ratings (1..9); a rating outside it is a data error.
RATING_RANGE = (1.0, 9.0)


def high_low(rating: float, threshold: float = 5.0) -> int:
    """1 for a high rating (strictly above ``threshold`` on the 1..9 scale), else 0."""
    return int(float(rating) > threshold)


def check_rating(value: float, name: str, path: str | PathLike, rating_range: tuple[float, float] = RATING_RANGE,
                 where: str = "") -> float:
    """`value` if it is a finite number within `rating_range`; otherwise `FormatError` naming the file, the rating
    and (in `where`, e.g. "line 7: ") its place."""
    low, high = rating_range
    if not (np.isfinite(value) and low <= value <= high):
        raise FormatError(f"{where}{name} rating {value} is outside the {low:g}..{high:g} scale", path)
    return value


def _colour_video(folder: Path, tracks: list[ET.Element]) -> tuple[Path | None, str]:
    """The session's colour video (match rule of the module docstring), or None; and the file name the XML gives
    for it (for the report when it is missing)."""
    named = ""
    for track in tracks:
        name = track.get("filename", "")
        if track.get("type", "").lower() == "video" and (track.get("color") == "1" or COLOUR_CAMERA_TAG in name):
            named = named or name
            if (folder / name).is_file():
                return folder / name, name
    tagged = sorted(folder.glob(f"*{COLOUR_CAMERA_TAG}*.avi"))
    if tagged:
        return tagged[0], named
    videos = sorted(folder.glob("*.avi"))
    return (videos[0] if len(videos) == 1 else None), named


def _bdf_file(folder: Path, tracks: list[ET.Element]) -> Path | None:
    for track in tracks:
        name = track.get("filename", "")
        if track.get("type", "").lower().startswith("physio") and (folder / name).is_file():
            return folder / name
    files = sorted(folder.glob("*.bdf"))
    return files[0] if len(files) == 1 else None


def _session_number(session: ET.Element, folder: Path, xml_path: Path) -> int:
    text = session.get("sessionId") or folder.name
    if not text.isdigit():
        raise FormatError(f"session id {text!r} (sessionId attribute or folder name) is not a number", xml_path)
    return int(text)


def ecg_reference_hr(bdf_path: str | PathLike) -> float:
    """Reference heart rate (bpm) from a MAHNOB BDF: lead II (EXG3 - EXG1) when both exist, else the first EXG."""
    present = [name for name in ECG_CHANNELS if name in read_bdf_labels(bdf_path)]
    if not present:
        raise FormatError(f"no ECG channel among {ECG_CHANNELS}", bdf_path)
    signals = read_bdf(bdf_path, channels=present)
    ecg, rate = signals.channel(present[0])
    if "EXG1" in present and "EXG3" in present:
        ecg = signals.channel("EXG3")[0] - signals.channel("EXG1")[0]
    return ecg_heart_rate(ecg, rate)


def _optional_rating(session: ET.Element, name: str, xml_path: Path, rating_range: tuple[float, float]) -> float:
    """An optional 1..9 attribute (``feltCtrl``, ``feltPred``): NaN when absent, checked when present."""
    text = session.get(name)
    if text is None or not text.strip():
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{name}={text!r} is not a number", xml_path) from None
    return check_rating(value, name, xml_path, rating_range)


def _optional_number(session: ET.Element, name: str, xml_path: Path) -> float:
    text = session.get(name)
    if text is None or not text.strip():
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"{name}={text!r} is not a number", xml_path) from None


def load_mahnob(root: str | PathLike, reference_hr: bool = False, rating_range: tuple[float, float] = RATING_RANGE,
                labels_only: bool = False, require_video: bool = False):
    """Rows of the MAHNOB-HCI emotion sessions under ``root`` as a ``datasets.Dataset``.

    Columns: ``subject`` (str), ``session`` (int), ``valence``, ``arousal`` (float, 1..9), ``valence_high``,
    ``arousal_high`` (0/1, threshold 5), ``emotion`` (feltEmo code, -1 if absent), ``emotion_index`` (index into the
    ``mahnob_emotions`` label set, -1 if absent), ``control`` and ``predictability`` (``feltCtrl``/``feltPred``,
    1..9, NaN if absent), ``media_file`` (``mediaFile``, the stimulus; None if absent), ``cut_length_s``
    (``cutLenSec``), ``video_rate`` (``vidRate``, fps; both NaN if absent), ``video_path`` (None when the colour
    video is missing, or with ``labels_only``), ``bdf_path`` (None if absent), and with ``reference_hr`` also
    ``ecg_hr_bpm`` (from the ECG leads; NaN without a BDF). Ratings must be finite and within ``rating_range``.

    Args:
        root: the folder holding ``Sessions/``.
        reference_hr: add ``ecg_hr_bpm`` (reads every BDF; not with ``labels_only``).
        rating_range: the scale every rating must lie in.
        labels_only: read only the ``session.xml`` files (no video or BDF is looked for).
        require_video: drop the sessions without a colour video (still reported) instead of keeping their labels.

    Raises:
        DatasetLayoutError: no ``Sessions`` folder, a session without ``session.xml``, no rated session.
        FormatError: an unparseable ``session.xml`` or one without ``<subject id>`` or with non-numeric ratings or
            ratings outside ``rating_range``.
    """
    from datasets import Dataset

    root = Path(root)
    sessions_dir = root / "Sessions"
    if not sessions_dir.is_dir():
        raise DatasetLayoutError("no 'Sessions' folder; expected root/Sessions/<n>/session.xml", root)
    if labels_only and reference_hr:
        raise ConfigError("reference_hr reads the BDF files; it cannot be combined with labels_only")
    folders = sorted((p for p in sessions_dir.iterdir() if p.is_dir()),
                     key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    rows, unrated, without_video = [], [], []
    for folder in folders:
        xml_path = folder / "session.xml"
        if not xml_path.is_file():
            raise DatasetLayoutError("session folder without session.xml", folder)
        try:
            session = ET.parse(xml_path).getroot()
        except ET.ParseError as error:
            raise FormatError(f"not valid XML ({error})", xml_path) from None
        if session.get("feltVlnc") is None or session.get("feltArsl") is None:
            unrated.append(folder.name)
            continue
        subject = session.find("subject")
        if subject is None or not subject.get("id"):
            raise FormatError('no <subject id="..."/> element', xml_path)
        try:
            valence, arousal = float(session.get("feltVlnc")), float(session.get("feltArsl"))
            emotion = int(session.get("feltEmo", "-1"))
        except ValueError:
            raise FormatError("feltVlnc/feltArsl/feltEmo are not numbers", xml_path) from None
        check_rating(valence, "feltVlnc", xml_path, rating_range)
        check_rating(arousal, "feltArsl", xml_path, rating_range)
        tracks = session.findall("track")
        video, bdf = None, None
        if not labels_only:
            video, named = _colour_video(folder, tracks)
            bdf = _bdf_file(folder, tracks)
            if video is None:
                without_video.append(f"{folder.name} ({named or 'no colour track named'})")
                if require_video:
                    continue
        row = {
            "subject": subject.get("id"),
            "session": _session_number(session, folder, xml_path),
            "valence": valence, "arousal": arousal,
            "valence_high": high_low(valence), "arousal_high": high_low(arousal),
            "emotion": emotion, "emotion_index": FELT_EMO_TO_INDEX.get(emotion, -1),
            "control": _optional_rating(session, "feltCtrl", xml_path, rating_range),
            "predictability": _optional_rating(session, "feltPred", xml_path, rating_range),
            "media_file": session.get("mediaFile"),
            "cut_length_s": _optional_number(session, "cutLenSec", xml_path),
            "video_rate": _optional_number(session, "vidRate", xml_path),
            "video_path": None if video is None else str(video),
            "bdf_path": None if bdf is None else str(bdf),
        }
        if reference_hr:
            row["ecg_hr_bpm"] = float("nan") if bdf is None else ecg_reference_hr(bdf)
        rows.append(row)
    if unrated:
        warnings.warn(f"{root}: skipped {len(unrated)} session(s) without feltVlnc/feltArsl ratings: "
                      f"{unrated[:10]}{' ...' if len(unrated) > 10 else ''}", stacklevel=2)
    if without_video:
        what = "dropped" if require_video else "kept their labels with video_path None"
        warnings.warn(f"{root}: {len(without_video)} session(s) have no colour video and {what}: "
                      f"{', '.join(without_video[:10])}{' ...' if len(without_video) > 10 else ''}", stacklevel=2)
    if not rows:
        raise DatasetLayoutError("no rated session found under Sessions/", root)
    return Dataset.from_list(rows)


def subject_folds(subjects: list[str] | np.ndarray, protocol: str = "loso", k: int = 10,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row indices ``(train, test)`` per fold of a subject-independent protocol.

    Args:
        subjects: the subject of every row (e.g. ``dataset["subject"]``).
        protocol: ``"loso"`` (leave one subject out) or ``"kfold"`` (subject-independent k-fold).
        k, seed: folds and shuffling seed of ``"kfold"``.
    """
    from .folds import leave_one_subject_out, subject_kfold

    subjects = np.asarray([str(s) for s in subjects])
    unique = sorted(set(subjects.tolist()))
    if protocol == "loso":
        splits = leave_one_subject_out(unique)
    elif protocol == "kfold":
        splits = subject_kfold(unique, k=k, seed=seed)
    else:
        raise ValueError(f"protocol must be 'loso' or 'kfold', got {protocol!r}")
    return [(np.flatnonzero(np.isin(subjects, [str(s) for s in train])),
             np.flatnonzero(np.isin(subjects, [str(s) for s in test]))) for train, test in splits]
