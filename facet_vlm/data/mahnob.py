"""MAHNOB-HCI (emotion elicitation part): sessions with a colour face video, ratings and BioSemi signals.

Layout read (as distributed)::

    root/Sessions/<n>/session.xml      <session feltVlnc="7" feltArsl="4" feltEmo="4" ...><subject id="1"/>
                                       <track type="Video" filename="..."/>... </session>
    root/Sessions/<n>/P1-Rec1-2009.07.09.17.53.46_C1 trigger _C1.avi
    root/Sessions/<n>/Part_1_S_Trial1_emotion.bdf

Colour-video match rule, first that applies: (1) a ``<track type="Video">`` whose ``filename`` contains
``"C1 trigger"`` (camera C1 is the colour camera that carries the trigger) and exists; (2) a file matching
``*C1 trigger*.avi`` in the session folder; (3) the only ``*.avi`` there. Otherwise the session is reported as a
layout error. The BDF is the ``<track type="Physiological">`` file, else the only ``*.bdf`` (it may be absent).
Sessions without ``feltVlnc``/``feltArsl`` (the implicit-tagging part) are skipped with a warning that counts them.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DatasetLayoutError, FormatError
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


def _colour_video(folder: Path, tracks: list[ET.Element], xml_path: Path) -> Path:
    for track in tracks:
        name = track.get("filename", "")
        if track.get("type", "").lower() == "video" and COLOUR_CAMERA_TAG in name and (folder / name).is_file():
            return folder / name
    tagged = sorted(folder.glob(f"*{COLOUR_CAMERA_TAG}*.avi"))
    if tagged:
        return tagged[0]
    videos = sorted(folder.glob("*.avi"))
    if len(videos) == 1:
        return videos[0]
    raise DatasetLayoutError(f"cannot choose the colour video: expected a '*{COLOUR_CAMERA_TAG}*.avi' file or a "
                             f"single .avi, found {[v.name for v in videos]}", xml_path.parent)


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


def load_mahnob(root: str | PathLike, reference_hr: bool = False, rating_range: tuple[float, float] = RATING_RANGE):
    """Rows of the MAHNOB-HCI emotion sessions under ``root`` as a ``datasets.Dataset``.

    Columns: ``subject`` (str), ``session`` (int), ``valence``, ``arousal`` (float, 1..9), ``valence_high``,
    ``arousal_high`` (0/1, threshold 5), ``emotion`` (feltEmo code, -1 if absent), ``emotion_index`` (index into the
    ``mahnob_emotions`` label set, -1 if absent), ``video_path``, ``bdf_path`` (None if absent), and with
    ``reference_hr`` also ``ecg_hr_bpm`` (from the ECG leads; NaN without a BDF). ``feltVlnc``/``feltArsl`` must
    be finite and within ``rating_range``.

    Raises:
        DatasetLayoutError: no ``Sessions`` folder, a session without ``session.xml`` or without a colour video.
        FormatError: an unparseable ``session.xml`` or one without ``<subject id>`` or with non-numeric ratings or
            ratings outside ``rating_range``.
    """
    from datasets import Dataset

    root = Path(root)
    sessions_dir = root / "Sessions"
    if not sessions_dir.is_dir():
        raise DatasetLayoutError("no 'Sessions' folder; expected root/Sessions/<n>/session.xml", root)
    folders = sorted((p for p in sessions_dir.iterdir() if p.is_dir()),
                     key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    rows, unrated = [], []
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
        bdf = _bdf_file(folder, tracks)
        row = {
            "subject": subject.get("id"),
            "session": _session_number(session, folder, xml_path),
            "valence": valence, "arousal": arousal,
            "valence_high": high_low(valence), "arousal_high": high_low(arousal),
            "emotion": emotion, "emotion_index": FELT_EMO_TO_INDEX.get(emotion, -1),
            "video_path": str(_colour_video(folder, tracks, xml_path)),
            "bdf_path": None if bdf is None else str(bdf),
        }
        if reference_hr:
            row["ecg_hr_bpm"] = float("nan") if bdf is None else ecg_reference_hr(bdf)
        rows.append(row)
    if unrated:
        warnings.warn(f"{root}: skipped {len(unrated)} session(s) without feltVlnc/feltArsl ratings "
                      f"(implicit tagging): {unrated[:10]}", stacklevel=2)
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
