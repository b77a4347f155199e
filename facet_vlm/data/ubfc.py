"""UBFC-rPPG (Bobbia, Macwan, Benezeth, Mansouri, Dubois, "Unsupervised skin tissue segmentation for remote
photoplethysmography", Pattern Recognition Letters 2017): face videos with a contact-PPG reference.

Layout read (the data set's ``DATASET_2`` part, as rPPG-Toolbox's ``UBFCrPPGLoader`` reads it)::

    root/subject<N>/vid.avi            uncompressed 640x480 video at about 30 fps (or a re-encoded vid.mp4)
    root/subject<N>/ground_truth.txt   three whitespace-separated rows of equal length

``ground_truth.txt`` rows: 1) the PPG waveform of the pulse oximeter, 2) the heart rate the oximeter displayed
(bpm), 3) the time of each sample in seconds. The oximeter's heart-rate row saturates and drops out on some
subjects, so the reference heart rate is computed from the waveform (row 1), as rPPG-Toolbox does
(:func:`reference_heart_rate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DatasetLayoutError, FormatError
from ..physio.postprocess import PULSE_BAND, postprocess_pulse, spectral_heart_rate

#: Video file names looked for in a subject folder, in order.
VIDEO_NAMES = ("vid.avi", "vid.mp4")
GROUND_TRUTH_NAME = "ground_truth.txt"
_SUBJECT_FOLDER = re.compile(r"subject(\d+)$")


@dataclass(frozen=True)
class UBFCSubject:
    """One UBFC-rPPG recording: the subject number, its video and its ground-truth file."""

    subject: int
    video_path: Path
    ground_truth_path: Path


@dataclass(frozen=True)
class UBFCGroundTruth:
    """The three rows of ``ground_truth.txt``: ``ppg`` (waveform), ``heart_rate`` (oximeter, bpm), ``time`` (s)."""

    ppg: np.ndarray
    heart_rate: np.ndarray
    time: np.ndarray

    @property
    def sample_rate(self) -> float:
        """Samples per second from the time row."""
        duration = float(self.time[-1] - self.time[0])
        return (len(self.time) - 1) / duration if duration > 0 else float("nan")


def list_ubfc_subjects(root: str | PathLike, subjects: list[int] | None = None) -> list[UBFCSubject]:
    """The ``subject<N>`` folders of a UBFC-rPPG root (all, or the numbers in ``subjects``), by number.

    Raises:
        DatasetLayoutError: the root is missing or has no subject folder; a requested subject is missing; a
            subject folder has no video (``vid.avi`` or ``vid.mp4``) or no ``ground_truth.txt``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError("UBFC-rPPG root not found", root)
    found = {int(match.group(1)): folder for folder in root.iterdir()
             if folder.is_dir() and (match := _SUBJECT_FOLDER.match(folder.name))}
    if not found:
        raise DatasetLayoutError("no subject<N> folder; expected root/subject<N>/vid.avi and ground_truth.txt", root)
    wanted = sorted(found) if subjects is None else sorted(set(int(s) for s in subjects))
    missing = [s for s in wanted if s not in found]
    if missing:
        raise DatasetLayoutError(f"no folder for subject(s) {missing}; found subjects {sorted(found)}", root)
    listed = []
    for number in wanted:
        folder = found[number]
        video = next((folder / name for name in VIDEO_NAMES if (folder / name).is_file()), None)
        if video is None:
            raise DatasetLayoutError(f"no video ({' or '.join(VIDEO_NAMES)})", folder)
        if not (folder / GROUND_TRUTH_NAME).is_file():
            raise DatasetLayoutError(f"no {GROUND_TRUTH_NAME}", folder)
        listed.append(UBFCSubject(number, video, folder / GROUND_TRUTH_NAME))
    return listed


def read_ubfc_ground_truth(path: str | PathLike) -> UBFCGroundTruth:
    """The three rows of a ``ground_truth.txt``.

    Raises:
        FormatError: fewer than three rows, a value that is not a number, rows of different lengths, fewer than
            two samples, or a PPG row that is not finite.
    """
    path = Path(path)
    rows = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if len(rows) < 3:
        raise FormatError(f"expected 3 rows (PPG waveform, heart rate, time), found {len(rows)}", path)
    try:
        ppg, heart_rate, time = (np.array([float(v) for v in row]) for row in rows[:3])
    except ValueError as error:
        raise FormatError(f"a value is not a number ({error})", path) from None
    if not len(ppg) == len(heart_rate) == len(time) or len(ppg) < 2:
        raise FormatError(f"rows have {len(ppg)}, {len(heart_rate)} and {len(time)} values; expected equal lengths "
                          "of at least 2", path)
    if not np.isfinite(ppg).all():
        raise FormatError("the PPG row holds NaN or infinite values", path)
    return UBFCGroundTruth(ppg, heart_rate, time)


def resample_to_frames(waveform: np.ndarray, frames: int) -> np.ndarray:
    """A reference waveform stretched linearly onto ``frames`` samples (first and last samples kept), as
    rPPG-Toolbox's ``BaseLoader.resample_ppg`` aligns a label with the video's frames."""
    waveform = np.asarray(waveform, dtype=np.float64)
    return np.interp(np.linspace(0, len(waveform) - 1, frames), np.arange(len(waveform)), waveform)


def reference_heart_rate(ppg: np.ndarray, frames: int, fps: float, band: tuple[float, float] = PULSE_BAND,
                         filter_order: int = 2, detrend_lambda: float = 100.0) -> float:
    """The reference heart rate (bpm) of a clip from its contact-PPG waveform, as rPPG-Toolbox computes it for the
    per-video FFT evaluation (``calculate_metric_per_video`` with ``hr_method='FFT'``, ``diff_flag=False``):

    1. the waveform is resampled onto the video's ``frames`` (:func:`resample_to_frames`) and treated as sampled
       at the video's ``fps``;
    2. smoothness-priors detrending (lambda = 100) and a zero-phase second-order Butterworth band-pass of
       0.75-2.5 Hz (:func:`facet_vlm.physio.postprocess.postprocess_pulse`);
    3. the frequency of the largest periodogram bin within the band, FFT length the next power of two.

    The rPPG estimate goes through the same steps 2-3, so the two are measured alike.
    """
    aligned = resample_to_frames(ppg, frames)
    pulse = postprocess_pulse(aligned, fps, band, filter_order, detrend_lambda)
    return spectral_heart_rate(pulse, fps, band).heart_rate
