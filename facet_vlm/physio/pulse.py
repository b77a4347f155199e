"""The pulse of a face video in one streaming pass: face tracking, skin trace, rPPG, post-processing, quality.

``measure_pulse("clip.mp4")`` decodes the clip one frame at a time (:mod:`facet_vlm.physio.video`), tracks the
face and takes the mean RGB of its forehead and cheeks in every frame (:mod:`facet_vlm.physio.face_tracking`),
and keeps only that ``(T, 3)`` trace (plus, when asked, a few face crops for a model): memory does not grow with
the clip's length beyond 24 bytes a frame. The trace then goes through POS (or CHROM) and the standard
post-processing (:mod:`facet_vlm.physio.postprocess`): the clip's heart rate, the heart rate over time, an SNR, and
a low-confidence flag with its reasons.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from ..errors import ConfigError, FacetVLMError
from .face_region import crop_face
from .face_tracking import FaceTracker, FaceTrackReport, MTCNNDetector, SkinRegions, TrackedFrame
from .postprocess import (
    PULSE_BAND,
    WindowedHeartRate,
    next_power_of_two,
    postprocess_pulse,
    spectral_heart_rate,
    windowed_heart_rate,
)
from .rppg import chrom, pos
from .video import VideoStream

logger = logging.getLogger(__name__)

RPPG_METHODS = ("pos", "chrom")


class NoFaceError(FacetVLMError):
    """No face (and, with the ``"auto"`` detector, no skin-coloured region) was found in any frame of a clip."""


#: Seconds between face detections when preparing the physio model's inputs (`facet_vlm.physio.physio_analysis`,
#: `PhysioPromptProcessor`): keyframes keep preparing a training set fast; `PulseConfig`'s own default detects on
#: every frame.
MODEL_DETECT_EVERY_S = 0.2


@dataclass(frozen=True)
class PulseConfig:
    """Settings of :func:`measure_pulse`.

    Attributes:
        method: ``"chrom"`` (de Haan & Jeanne 2013; the default) or ``"pos"`` (Wang et al. 2017). CHROM was chosen
            on the UBFC-rPPG development subjects: it was at least as good as POS on the same skin regions in every
            comparison made there (clip MAE 2.0 vs 10.4 bpm with detection on every frame, 4.3 vs 8.9 with
            detection every 0.2 s; windows within 5 bpm of the reference 62 vs 55 % and 61 vs 58 %;
            ``docs/rppg.md``).
        detector: ``"auto"``, ``"mtcnn"`` or ``"skin"`` (see :class:`facet_vlm.physio.face_tracking.FaceTracker`).
        detect_every_s: seconds between two face detections, landmarks interpolated in between; 0 (the default)
            detects on every frame, so the skin regions follow head motion instead of lagging between keyframes
            (head motion is what the real clips that fail have). 0.2 is about 5x faster (MTCNN takes 33 ms per
            640x480 frame on one CPU thread) and is what the physio model's processor uses.
        hold_s: seconds a face is kept after detections stop finding it.
        band: heart-rate band in Hz (rPPG-Toolbox's 0.75-2.5 Hz = 45-150 bpm).
        filter_order: Butterworth prototype order of the zero-phase band-pass (``scipy.signal.butter``'s: the
            band-pass has twice this order). rPPG-Toolbox uses 1; 2 is our default (steeper band edges).
        detrend_lambda: smoothness-priors detrending parameter.
        window_s, step_s: the windows of the heart rate over time.
        resolution_bpm: the clip's spectrum is zero-padded to at least this fine a grid (bpm per bin). The FFT
            length is the next power of two of ``max(frames, fps * 60 / resolution_bpm)``: for clips of 34 to 68 s
            at 30 fps that is rPPG-Toolbox's own length (the next power of two of the frame count), and short clips
            get a 1 bpm grid instead of the toolbox's 7 bpm at 6 s.
        noise_quantile, noise_draws: a clip whose SNR is below the ``noise_quantile`` quantile of the SNR of
            white noise of the same length (estimated from ``noise_draws`` simulated clips;
            :func:`noise_snr_threshold`) is flagged low-confidence: its pulse peak is not clearly above what noise
            alone gives.
        min_face_fraction: a clip whose share of frames with a detected (or held) face is below this is flagged.
        cross_check_bpm: the heart rate is also computed with the other rPPG method (CHROM for POS, POS for CHROM)
            on the same regions; a clip where the two differ by more than this is flagged (two projections of the
            same skin colour that disagree mean at least one follows noise). ``None`` skips the check.
        regions: the skin-region geometry and colour test.
    """

    method: str = "chrom"
    detector: str = "auto"
    detect_every_s: float = 0.0
    hold_s: float = 1.0
    band: tuple[float, float] = PULSE_BAND
    filter_order: int = 2
    detrend_lambda: float = 100.0
    window_s: float = 10.0
    step_s: float = 1.0
    resolution_bpm: float = 1.0
    noise_quantile: float = 0.95
    noise_draws: int = 200
    min_face_fraction: float = 0.8
    cross_check_bpm: float | None = 5.0
    regions: SkinRegions = field(default_factory=SkinRegions)

    def __post_init__(self):
        if self.method not in RPPG_METHODS:
            raise ConfigError(f"rPPG method must be one of {RPPG_METHODS}, got {self.method!r}")
        if self.detect_every_s < 0 or self.hold_s < 0:
            raise ConfigError(f"detect_every_s={self.detect_every_s} (0: every frame) and hold_s={self.hold_s} must "
                              "be >= 0")

    def tracker(self, fps: float) -> FaceTracker:
        """The face tracker of this configuration at ``fps``."""
        return FaceTracker(self.detector, detect_every=max(1, int(round(self.detect_every_s * fps))),
                           hold_frames=int(round(self.hold_s * fps)), regions=self.regions,
                           detector_factory=_shared_mtcnn)


@functools.lru_cache(maxsize=1)
def _shared_mtcnn() -> MTCNNDetector:
    """One MTCNN per process (building it loads the package and its weights: about 2 s the first time)."""
    return MTCNNDetector()


@dataclass
class PulseResult:
    """The pulse of one clip.

    Attributes:
        heart_rate: bpm, the spectral peak of the whole clip's post-processed pulse.
        snr_db: SNR (dB) of the pulse around that peak and its harmonic.
        snr_threshold_db: the SNR below which this clip is flagged (:func:`noise_snr_threshold`).
        low_confidence: the heart rate should not be trusted; ``reasons`` says why.
        reasons: the checks that failed (SNR, face coverage, clip length).
        windows: the heart rate over time.
        signal: the post-processed pulse, one value per frame (float32).
        waveform: the rPPG output before post-processing (what a time-frequency map is built from).
        trace: the ``(T, R, 3)`` mean RGB of each skin region per frame (frames without a region interpolated).
        fps: the frame rate used.
        frames: number of frames.
        face: how every frame's region was found.
        method: the rPPG method.
    """

    heart_rate: float
    snr_db: float
    snr_threshold_db: float
    low_confidence: bool
    reasons: list[str]
    windows: WindowedHeartRate
    signal: np.ndarray
    waveform: np.ndarray
    trace: np.ndarray
    fps: float
    frames: int
    face: FaceTrackReport
    method: str

    def to_dict(self, with_signal: bool = True) -> dict[str, Any]:
        """JSON-ready summary (the pulse signal as a list when ``with_signal``)."""
        summary = {"heart_rate": round(self.heart_rate, 2), "snr_db": round(self.snr_db, 2),
                   "snr_threshold_db": round(self.snr_threshold_db, 2), "low_confidence": self.low_confidence,
                   "reasons": list(self.reasons), "fps": self.fps,
                   "frames": self.frames, "method": self.method, "face": self.face.to_dict(),
                   "heart_rate_over_time": self.windows.to_dict()}
        if with_signal:
            summary["pulse"] = self.signal.astype(float).round(5).tolist()
        return summary

    def describe(self) -> str:
        """One line for people: heart rate, SNR, and the warning when low-confidence."""
        text = f"{self.heart_rate:.1f} bpm (SNR {self.snr_db:+.1f} dB)"
        if self.low_confidence:
            text += " LOW CONFIDENCE: " + "; ".join(self.reasons)
        return text


class FrameSampler:
    """Keeps about ``count`` values spread uniformly over a stream whose length may be unknown, in bounded memory.

    Frames at the ``count`` indices ``linspace(0, expected - 1, count)`` are kept when the length is expected
    (an array, or a container's frame count); every ``stride``-th frame is kept too, the stride doubling whenever
    more than ``4 * count`` are held. :meth:`select` picks, for each uniform target of the real length, the
    nearest kept frame (the exact one when the expected length was right).
    """

    def __init__(self, count: int, expected: int | None = None):
        self.count, self.stride = int(count), 1
        self.targets = set(np.linspace(0, expected - 1, count).round().astype(int).tolist()) if expected else set()
        self.items: dict[int, Any] = {}

    def wants(self, index: int) -> bool:
        return index in self.targets or index % self.stride == 0

    def add(self, index: int, value: Any) -> None:
        self.items[index] = value
        if sum(1 for key in self.items if key not in self.targets) > 4 * self.count:
            self.stride *= 2
            self.items = {key: item for key, item in self.items.items()
                          if key in self.targets or key % self.stride == 0}

    def select(self, total: int) -> list[Any]:
        keys = np.array(sorted(self.items))
        wanted = np.linspace(0, total - 1, self.count).round()
        return [self.items[int(keys[np.argmin(np.abs(keys - target))])] for target in wanted]


def _frames_and_rate(video: str | PathLike | np.ndarray | Iterable[np.ndarray], fps: float | None
                     ) -> tuple[Iterator[np.ndarray], float, int | None]:
    if isinstance(video, str | PathLike):
        stream = VideoStream(video)
        return iter(stream), float(fps or stream.info.fps), stream.info.frame_count or None
    if fps is None or fps <= 0:
        raise ConfigError("frames given as an array or an iterable need their frame rate: pass fps=...")
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ConfigError(f"frames must be (T, H, W, 3) RGB, got shape {video.shape}")
        return iter(video), float(fps), len(video)
    return iter(video), float(fps), None


def _fill_gaps(traces: np.ndarray, name: str) -> np.ndarray:
    """``(T, R, 3)`` region traces with each region's missing frames interpolated; regions never seen dropped."""
    kept = []
    index = np.arange(len(traces))
    for region in np.moveaxis(traces, 1, 0):
        valid = np.isfinite(region[:, 0])
        if valid.any():
            kept.append(region if valid.all() else
                        np.stack([np.interp(index, index[valid], region[valid, c]) for c in range(3)], axis=1))
    if not kept:
        raise NoFaceError("no face and no skin region was found in any frame", name)
    return np.stack(kept, axis=1)


def _crop(tracked: TrackedFrame, last_box: np.ndarray | None, size: int) -> np.ndarray:
    box = tracked.face.box if tracked.face is not None else last_box
    if box is None:
        height, width = tracked.frame.shape[:2]
        box = np.array([0, 0, width, height], float)
    x0, y0, x1, y1 = box
    rect = (int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0))))
    return crop_face(tracked.frame[None], rect, size=size)[0]


def analyze_face_video(video: str | PathLike | np.ndarray | Iterable[np.ndarray], fps: float | None = None,
                       config: PulseConfig | None = None, num_crops: int = 0, crop_size: int = 224
                       ) -> tuple[PulseResult, np.ndarray | None]:
    """The pulse of a face video and, with ``num_crops``, face crops sampled uniformly over it — one pass.

    Args:
        video: a video file (streamed), RGB ``uint8`` frames ``(T, H, W, 3)``, or an iterable of RGB frames.
        fps: frame rate; required for frames, overrides the container's rate for a file.
        config: the settings (defaults: :class:`PulseConfig`).
        num_crops: face crops to return (square around the tracked face box, 15 % margin).
        crop_size: their side in pixels.

    Returns:
        The :class:`PulseResult` and the crops (uint8 ``(num_crops, crop_size, crop_size, 3)``, or ``None``).

    Raises:
        FormatError: the file is not a decodable video (a text file, an image, ...), named in the message.
        NoFaceError: no frame has a face region (with ``detector="auto"``, no skin-coloured region either).
        ConfigError: bad settings, or a clip too short for the band-pass.
    """
    config = config or PulseConfig()
    name = str(video) if isinstance(video, str | PathLike) else "frames"
    frames, fps, expected = _frames_and_rate(video, fps)
    tracker = config.tracker(fps)
    sampler = FrameSampler(num_crops, expected) if num_crops > 0 else None
    rows: list[np.ndarray] = []
    last_box = None
    regions = len(config.regions.polygons(np.zeros((5, 2))))
    for index, tracked in enumerate(tracker.track(frames)):
        rows.append(tracked.region_means(regions, config.regions.min_region_pixels))
        if sampler is not None and sampler.wants(index):
            sampler.add(index, _crop(tracked, last_box, crop_size))
        if tracked.face is not None:
            last_box = tracked.face.box
    trace = _fill_gaps(np.asarray(rows, dtype=np.float64).reshape(-1, regions, 3), name)
    result = pulse_from_trace(trace, fps, config, tracker.report)
    if tracker.report.fallback_frames:
        logger.warning("%s: %s", name, tracker.report.summary())
    crops = np.stack(sampler.select(len(trace))) if sampler is not None else None
    return result, crops


def measure_pulse(video: str | PathLike | np.ndarray | Iterable[np.ndarray], fps: float | None = None,
                  config: PulseConfig | None = None) -> PulseResult:
    """The pulse of a face video (see :func:`analyze_face_video`), streamed from a file in bounded memory."""
    return analyze_face_video(video, fps, config)[0]


def video_heart_rate(frames: np.ndarray, fps: float, method: str = "chrom") -> float:
    """Heart rate (bpm) of a face video given as frames: :func:`measure_pulse` (face tracking, forehead and cheek
    regions, POS or CHROM, rPPG-Toolbox post-processing). Use ``measure_pulse`` itself for a file (streamed) and for
    the quality figures that come with the rate."""
    return measure_pulse(frames, fps, PulseConfig(method=method)).heart_rate


def combine_regions(traces: np.ndarray, fps: float, method: str = "pos") -> np.ndarray:
    """The rPPG waveform of ``(T, R, 3)`` region traces (or one ``(T, 3)`` trace): POS or CHROM on each region,
    each scaled to unit standard deviation, summed.

    The pulse is the same in every region while their noise (motion shading, hair, compression blocks) is not,
    so the sum favours the pulse; scaling keeps a large or high-contrast region from drowning the others (our
    choice; a pixel-weighted mean RGB of all regions before POS is the other common one, see ``docs/rppg.md``).
    """
    traces = np.asarray(traces, dtype=np.float64)
    if traces.ndim == 2:
        traces = traces[:, None]
    total = np.zeros(len(traces))
    for region in np.moveaxis(traces, 1, 0):
        waveform = pos(region, fps, filtered=False) if method == "pos" else chrom(region, fps)
        total += (waveform - waveform.mean()) / (waveform.std() + 1e-12)
    return total


def pulse_from_trace(trace: np.ndarray, fps: float, config: PulseConfig | None = None,
                     face: FaceTrackReport | None = None) -> PulseResult:
    """rPPG, post-processing, heart rate, heart rate over time and the quality checks of an RGB trace: ``(T, 3)``,
    or ``(T, R, 3)`` for R skin regions (:func:`combine_regions`).

    ``face`` (how the trace's regions were found) feeds the face-coverage check; without it the check is skipped.
    """
    config = config or PulseConfig()
    trace = np.asarray(trace, dtype=np.float64)
    waveform = combine_regions(trace, fps, config.method)
    signal = postprocess_pulse(waveform, fps, config.band, config.filter_order, config.detrend_lambda)
    estimate = spectral_heart_rate(signal, fps, config.band, clip_fft_length(len(signal), fps, config))
    windows = windowed_heart_rate(signal, fps, config.window_s, config.step_s, config.band)
    threshold = noise_snr_threshold(len(signal), fps, config)
    reasons = []
    if estimate.snr_db < threshold:
        reasons.append(f"SNR {estimate.snr_db:+.1f} dB is below {threshold:+.1f} dB, which noise alone stays under in "
                       f"{100 * config.noise_quantile:.0f} % of clips of this length: no clear pulse peak")
    if face is not None and face.face_fraction < config.min_face_fraction:
        reasons.append(f"a face was detected on {100 * face.face_fraction:.0f} % of the frames (fewer than "
                       f"{100 * config.min_face_fraction:.0f} %): {face.summary()}")
    if config.cross_check_bpm is not None:
        other = "chrom" if config.method == "pos" else "pos"
        other_signal = postprocess_pulse(combine_regions(trace, fps, other), fps, config.band, config.filter_order,
                                         config.detrend_lambda)
        other_rate = spectral_heart_rate(other_signal, fps, config.band, clip_fft_length(len(signal), fps, config))
        if abs(other_rate.heart_rate - estimate.heart_rate) > config.cross_check_bpm:
            reasons.append(f"{config.method.upper()} gives {estimate.heart_rate:.1f} bpm but {other.upper()} "
                           f"{other_rate.heart_rate:.1f} bpm on the same skin regions")
    if len(trace) < config.window_s * fps:
        reasons.append(f"the clip is {len(trace) / fps:.1f} s long, shorter than one {config.window_s:g} s window")
    report = face if face is not None else FaceTrackReport("none", frames=len(trace))
    return PulseResult(estimate.heart_rate, estimate.snr_db, threshold, bool(reasons), reasons, windows,
                       signal.astype(np.float32), waveform, trace, fps, len(trace), report, config.method)


def clip_fft_length(length: int, fps: float, config: PulseConfig) -> int:
    """The FFT length of a clip's heart-rate spectrum (see ``PulseConfig.resolution_bpm``)."""
    return next_power_of_two(max(int(length), int(np.ceil(fps * 60.0 / config.resolution_bpm))))


def noise_snr_threshold(length: int, fps: float, config: PulseConfig | None = None) -> float:
    """The SNR (dB) below which a clip of ``length`` frames is flagged: the ``config.noise_quantile`` quantile of
    the SNR that the same post-processing and peak search give on white Gaussian noise of that length.

    The SNR of noise alone depends on the clip's length (the peak of a short clip's few spectral bins stands out
    more by chance), so a fixed threshold would flag every long clip or none of the short ones. Computed by
    simulation (``config.noise_draws`` seeded draws, so it is deterministic) and cached per length and rate.
    """
    config = config or PulseConfig()
    return _noise_snr_threshold(int(length), round(float(fps), 4), tuple(config.band), config.filter_order,
                                float(config.detrend_lambda), float(config.noise_quantile), int(config.noise_draws),
                                clip_fft_length(length, fps, config))


@functools.lru_cache(maxsize=64)
def _noise_snr_threshold(length: int, fps: float, band: tuple[float, float], order: int, detrend_lambda: float,
                         quantile: float, draws: int, nfft: int) -> float:
    rng = np.random.default_rng(0)
    snrs = [spectral_heart_rate(postprocess_pulse(rng.standard_normal(length), fps, band, order, detrend_lambda),
                                fps, band, nfft).snr_db for _ in range(draws)]
    return float(np.quantile(snrs, quantile))
