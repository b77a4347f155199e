"""DEAP: face videos, self-assessment ratings and preprocessed physiological signals.

Layout read (as distributed)::

    root/metadata_csv/participant_ratings.csv   Participant_id, Trial, Experiment_id, Valence, Arousal, ...
    root/face_video/sNN/sNN_trialTT.avi         frontal face video (participants 1..22 only)
    root/data_preprocessed_python/sNN.dat        Python-2 pickle {'data': (40, 40, 8064), 'labels': (40, 4)}
    root/data_preprocessed_matlab/sNN.mat        the same two arrays as MATLAB variables

DEAP ships the preprocessed signals in two releases with the same content: a Python one (``.dat`` pickles) and a
MATLAB one (``.mat`` files). Each participant file holds the arrays ``data`` (40 x 40 x 8064: video/trial x
channel x data) and ``labels`` (40 x 4: video/trial x label — valence, arousal, dominance, liking). Either
release is read (:func:`load_deap_subject`); when both are present the Python one is used.

``Trial`` is the presentation order (it numbers the face videos); ``Experiment_id`` is the music-video id, and the
preprocessed arrays are ordered by it (row ``Experiment_id - 1``). The ``.dat`` files are read only through
:func:`facet_vlm.data.safe_pickle.restricted_load` (a pickle can run code); the ``.mat`` files with
``scipy.io.loadmat`` (MATLAB 5 format; a MATLAB 7.3 / HDF5 file is refused with a message).
"""

from __future__ import annotations

import csv
import io
import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DatasetLayoutError, FormatError
from .mahnob import RATING_RANGE, check_rating, high_low
from .safe_pickle import restricted_load

#: Channels of the preprocessed data: 32 EEG (Geneva order) then 8 peripheral.
DEAP_CHANNELS = ("Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz",
                 "Pz", "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8",
                 "PO4", "O2", "hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration belt", "Plethysmograph",
                 "Temperature")
#: Sample rate of the preprocessed signals (Hz); 8064 samples = 3 s baseline + 60 s trial.
DEAP_RATE = 128.0
DEAP_LABELS = ("valence", "arousal", "dominance", "liking")
#: Music videos (trials) per participant; ``Trial`` and ``Experiment_id`` run 1..40.
DEAP_TRIALS = 40
_REQUIRED_COLUMNS = ("Participant_id", "Trial", "Experiment_id", "Valence", "Arousal")


#: Folders and suffixes of the two releases of the preprocessed signals, in the order they are looked for.
PREPROCESSED_RELEASES = (("data_preprocessed_python", ".dat"), ("data_preprocessed_matlab", ".mat"))


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    with path.open("rb") as handle:
        header = handle.read(128)
    if b"MATLAB 7.3" in header[:116]:
        raise FormatError("a MATLAB 7.3 (HDF5) file; scipy.io.loadmat reads MATLAB 5 files (re-save it with "
                          "save(..., '-v7'))", path)
    try:
        content = loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError) as error:
        raise FormatError(f"not a readable MATLAB file ({error})", path) from None
    return {key: value for key, value in content.items() if not key.startswith("__")}


def load_deap_subject(path: str | PathLike) -> dict[str, np.ndarray]:
    """``{"data": float32 (40, 40, 8064), "labels": float32 (40, 4)}`` of one participant file, loaded safely: a
    ``sNN.dat`` of the Python release (restricted unpickling) or a ``sNN.mat`` of the MATLAB release
    (``scipy.io.loadmat``).

    Raises:
        UnsafePickleError: the pickle names anything but numpy arrays and containers.
        FormatError: the file is not a dict / MATLAB file with 'data' (trials, 40 channels, samples) and 'labels'
            (trials, 4), or a MATLAB 7.3 file.
    """
    path = Path(path)
    content = _read_mat(path) if path.suffix.lower() == ".mat" else restricted_load(path, encoding="latin1")
    if not isinstance(content, dict) or not all(isinstance(content.get(k), np.ndarray) for k in ("data", "labels")):
        raise FormatError("expected numpy arrays 'data' and 'labels'", path)
    data, labels = content["data"], content["labels"]
    if data.dtype.kind not in "fiu" or labels.dtype.kind not in "fiu":
        raise FormatError(f"'data' ({data.dtype}) and 'labels' ({labels.dtype}) must be numeric arrays", path)
    if data.ndim != 3 or data.shape[1] != len(DEAP_CHANNELS) or labels.shape != (data.shape[0], 4):
        raise FormatError(f"'data' {data.shape} / 'labels' {labels.shape} are not (trials, 40, samples) / "
                          "(trials, 4)", path)
    return {"data": data.astype(np.float32), "labels": labels.astype(np.float32)}


def preprocessed_file(root: str | PathLike, participant: int) -> Path | None:
    """The participant's preprocessed file: ``data_preprocessed_python/sNN.dat``, else
    ``data_preprocessed_matlab/sNN.mat``; ``None`` when neither exists."""
    for folder, suffix in PREPROCESSED_RELEASES:
        path = Path(root) / folder / f"s{participant:02d}{suffix}"
        if path.is_file():
            return path
    return None


def load_deap(root: str | PathLike, require_video: bool = True, rating_range: tuple[float, float] = RATING_RANGE):
    """Rows of DEAP trials as a ``datasets.Dataset``.

    Columns: ``subject`` (str participant id), ``trial`` (presentation order), ``experiment_id``, ``valence``,
    ``arousal``, ``dominance``, ``liking`` (1..9), ``valence_high``, ``arousal_high`` (threshold 5),
    ``video_path`` (None without a face video), ``dat_path`` (the preprocessed file of either release,
    :func:`preprocessed_file`; None without one), ``dat_index`` (row of the trial in its arrays).

    Args:
        root: the DEAP root.
        require_video: keep only trials that have a face video (a warning counts the others).
        rating_range: the scale every rating must lie in. Valence and arousal are required; an empty dominance or
            liking cell becomes NaN.

    Raises:
        DatasetLayoutError: no ratings CSV, or it lacks a required column.
        FormatError: the CSV is not UTF-8; a rating that is not a number or is outside ``rating_range``; a
            ``Trial`` or ``Experiment_id`` outside 1..40; two rows for the same participant and trial (or music
            video).
    """
    from datasets import Dataset

    root = Path(root)
    ratings_path = root / "metadata_csv" / "participant_ratings.csv"
    if not ratings_path.is_file():
        raise DatasetLayoutError("no metadata_csv/participant_ratings.csv", root)
    raw = ratings_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise FormatError(f"not UTF-8 text: byte 0x{raw[error.start]:02x} at offset {error.start} (line {line}); "
                          "re-save the file as UTF-8", ratings_path) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in _REQUIRED_COLUMNS if name not in fields]
    if missing:
        raise DatasetLayoutError(f"missing column(s) {missing}; found {fields}", ratings_path)
    records = [{(key or "").strip(): value for key, value in record.items()} for record in reader]
    rows, without_video, seen = [], 0, {}
    for line, record in enumerate(records, start=2):
        try:
            participant, trial = int(record["Participant_id"]), int(record["Trial"])
            experiment = int(record["Experiment_id"])
            scores = {name: float(record[name.capitalize()]) if record.get(name.capitalize()) else float("nan")
                      for name in DEAP_LABELS}
        except (TypeError, ValueError):
            raise FormatError(f"line {line}: a non-numeric id or rating in {record}", ratings_path) from None
        for name, value in scores.items():
            if name in ("valence", "arousal") or not np.isnan(value):
                check_rating(value, name, ratings_path, rating_range, where=f"line {line}: ")
        for name, value in (("Trial", trial), ("Experiment_id", experiment)):
            if not 1 <= value <= DEAP_TRIALS:
                raise FormatError(f"line {line}: {name} {value} is outside 1..{DEAP_TRIALS}", ratings_path)
        if participant < 1:
            raise FormatError(f"line {line}: Participant_id {participant} is not a positive number", ratings_path)
        for key in (("Trial", participant, trial), ("Experiment_id", participant, experiment)):
            if key in seen:
                raise FormatError(f"line {line}: participant {participant} has {key[0]} {key[2]} again (first on "
                                  f"line {seen[key]}); remove the duplicate row", ratings_path)
            seen[key] = line
        video = root / "face_video" / f"s{participant:02d}" / f"s{participant:02d}_trial{trial:02d}.avi"
        dat = preprocessed_file(root, participant)
        if require_video and not video.is_file():
            without_video += 1
            continue
        rows.append({
            "subject": str(participant), "trial": trial, "experiment_id": experiment, **scores,
            "valence_high": high_low(scores["valence"]), "arousal_high": high_low(scores["arousal"]),
            "video_path": str(video) if video.is_file() else None,
            "dat_path": None if dat is None else str(dat), "dat_index": experiment - 1,
        })
    if without_video:
        warnings.warn(f"{root}: skipped {without_video} trial(s) without a face video (DEAP records face video for "
                      "participants 1..22 only)", stacklevel=2)
    if not rows:
        raise DatasetLayoutError("no trial with ratings (and a face video) found", root)
    return Dataset.from_list(rows)


def deap_channel(subject_data: dict[str, np.ndarray], dat_index: int, channel: str = "Plethysmograph",
                 skip_baseline: bool = True) -> np.ndarray:
    """One channel of one trial from :func:`load_deap_subject` output (the 3 s pre-trial baseline dropped)."""
    trials = len(subject_data["data"])
    if not 0 <= dat_index < trials:
        raise FormatError(f"dat_index {dat_index} is outside 0..{trials - 1} (the trials of the subject's .dat)")
    samples = subject_data["data"][dat_index, DEAP_CHANNELS.index(channel)]
    return samples[int(3 * DEAP_RATE):] if skip_baseline else samples
