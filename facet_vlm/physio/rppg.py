"""Remote photoplethysmography: the pulse from the colour of facial skin in a video.

The building blocks: ``mean skin RGB per frame -> POS (or CHROM) -> band-pass -> heart rate / time-frequency map``.
Every function that takes ``frames`` also takes the ``(T, 3)`` mean-RGB trace instead, so a trace computed once (or
from another face tracker) can be reused; given frames, they take the trace from skin colour alone
(:func:`facet_vlm.physio.face_region.mean_skin_rgb`). The full path from a video — a real face detector, landmark
skin regions, the standard post-processing and a quality flag — is :func:`facet_vlm.physio.measure_pulse`.

References: Wang, den Brinker, Stuijk, de Haan, "Algorithmic principles of remote PPG" (POS), IEEE TBME 2017;
de Haan & Jeanne, "Robust pulse rate from chrominance-based rPPG" (CHROM), IEEE TBME 2013.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from ..errors import ConfigError
from .face_region import mean_skin_rgb

#: Band of plausible heart rates in Hz (42..240 bpm).
HR_BAND = (0.7, 4.0)
_POS_PROJECTION = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])


def rgb_trace(frames: np.ndarray) -> np.ndarray:
    """The ``(T, 3)`` mean skin RGB trace of ``frames`` (uint8 ``(T, H, W, 3)``), or ``frames`` if already a trace."""
    array = np.asarray(frames)
    if array.ndim == 2 and array.shape[1] == 3:
        return array.astype(np.float64)
    if array.ndim == 4 and array.shape[-1] == 3:
        return mean_skin_rgb(array)
    raise ValueError(f"expected frames (T, H, W, 3) or an RGB trace (T, 3), got shape {array.shape}")


def _window_length(fps: float, window_s: float, length: int) -> int:
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    window = int(np.ceil(window_s * fps))
    if window < 2:
        raise ConfigError(f"window_s={window_s} s at {fps} fps is shorter than 2 frames")
    if length < window:
        raise ConfigError(f"the clip has {length} frames, fewer than one {window_s} s window ({window} frames)")
    return window


def pos(frames: np.ndarray, fps: float, window_s: float = 1.6, filtered: bool = True) -> np.ndarray:
    """Plane-orthogonal-to-skin pulse (Wang et al. 2017) with overlap-add over sliding windows.

    In each window of ``window_s`` seconds (1.6 s = at least one cardiac cycle at 40 bpm, the paper's choice) the
    RGB trace is divided by its temporal mean (removing skin tone and illumination level), projected onto the
    plane orthogonal to the skin-tone direction, and the two projections are combined with the ratio of their
    standard deviations (alpha tuning, which cancels specular/intensity distortions); windows are mean-centred and
    summed (overlap-add, step one frame).

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB face frames or a ``(T, 3)`` mean-RGB trace.
        fps: frame rate.
        window_s: window length in seconds.
        filtered: band-pass the result to :data:`HR_BAND` (zero-phase), which removes residual drift.

    Returns:
        float64 ``(T,)`` pulse waveform (arbitrary units; higher = more blood volume is not guaranteed).
    """
    trace = rgb_trace(frames)
    length = len(trace)
    window = _window_length(fps, window_s, length)
    pulse = np.zeros(length)
    for end in range(window, length + 1):
        block = trace[end - window:end]
        mean = block.mean(axis=0)
        normalised = block / np.where(mean > 0, mean, 1.0)
        s1, s2 = _POS_PROJECTION @ normalised.T
        h = s1 + (s1.std() / (s2.std() + 1e-12)) * s2
        pulse[end - window:end] += h - h.mean()
    return bandpass(pulse, fps, *HR_BAND) if filtered else pulse


def chrom(frames: np.ndarray, fps: float, window_s: float = 1.6) -> np.ndarray:
    """Chrominance pulse (de Haan & Jeanne 2013) with Hann-windowed overlap-add at half-window steps.

    Returns a band-passed float64 ``(T,)`` waveform.
    """
    trace = rgb_trace(frames)
    length = len(trace)
    window = _window_length(fps, window_s, length)
    window += window % 2
    window = min(window, length - length % 2)
    step = window // 2
    taper = np.hanning(window)
    pulse = np.zeros(length)
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    for start in starts:
        block = trace[start:start + window]
        normalised = block / np.where(block.mean(axis=0) > 0, block.mean(axis=0), 1.0)
        r, g, b = normalised.T
        x = bandpass(3 * r - 2 * g, fps, *HR_BAND)
        y = bandpass(1.5 * r + g - 1.5 * b, fps, *HR_BAND)
        s = x - (x.std() / (y.std() + 1e-12)) * y
        pulse[start:start + window] += taper * (s - s.mean())
    return pulse


def bandpass(x: np.ndarray, fps: float, low: float = HR_BAND[0], high: float = HR_BAND[1],
             order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass (second-order sections, forward-backward) of a 1-D signal."""
    nyquist = fps / 2
    if not 0 < low < high:
        raise ConfigError(f"band-pass needs 0 < low < high, got low={low} Hz, high={high} Hz")
    if high >= nyquist:
        raise ConfigError(f"high={high} Hz is not below the Nyquist frequency {nyquist} Hz of fps={fps}")
    x = np.asarray(x, dtype=np.float64)
    sos = signal.butter(order, [low / nyquist, high / nyquist], btype="bandpass", output="sos")
    pad = min(len(x) - 1, 3 * (2 * len(sos) + 1) * 4)
    return signal.sosfiltfilt(sos, x - x.mean(), padlen=pad)


def _peak_frequency(freqs: np.ndarray, power: np.ndarray, low: float, high: float) -> float:
    """Frequency of the largest in-band spectral peak, refined by a parabola through log-power at 3 bins."""
    band = np.flatnonzero((freqs >= low) & (freqs <= high))
    if band.size == 0:
        raise ConfigError(f"no spectral bin between {low} and {high} Hz; the clip is too short")
    k = band[int(np.argmax(power[band]))]
    if 0 < k < len(power) - 1:
        a, b, c = np.log(power[k - 1:k + 2] + 1e-30)
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
        return float(freqs[k] + np.clip(offset, -0.5, 0.5) * (freqs[1] - freqs[0]))
    return float(freqs[k])


def heart_rate(waveform: np.ndarray, fps: float, low: float = HR_BAND[0], high: float = HR_BAND[1],
               method: str = "welch", segment_s: float = 10.0) -> float:
    """Heart rate in beats per minute: the in-band spectral peak of the pulse waveform.

    ``method="welch"`` averages Hann-windowed periodograms of ``segment_s`` s segments (half overlap; one segment if
    the clip is shorter), which steadies the peak under noise; ``"fft"`` uses one periodogram of the whole clip.
    Both zero-pad to a 0.01 Hz grid and refine the peak with parabolic interpolation.
    """
    x = signal.detrend(np.asarray(waveform, dtype=np.float64))
    nfft = max(len(x), int(2 ** np.ceil(np.log2(fps / 0.01))))
    if method == "welch":
        segment = min(len(x), int(round(segment_s * fps)))
        freqs, power = signal.welch(x, fs=fps, window="hann", nperseg=segment, noverlap=segment // 2, nfft=nfft)
    elif method == "fft":
        freqs, power = signal.periodogram(x, fs=fps, window="hann", nfft=nfft)
    else:
        raise ConfigError(f"heart_rate method must be 'welch' or 'fft', got {method!r}")
    return 60.0 * _peak_frequency(freqs, power, low, high)


def ecg_heart_rate(ecg: np.ndarray, fs: float) -> float:
    """Mean heart rate (bpm) of an ECG trace from its R peaks (a pulse reference for rPPG, e.g. MAHNOB ``EXG``).

    The trace is band-passed to 5..30 Hz (QRS energy), squared, and peaks at least 0.3 s apart above a third of
    the 99th percentile are R peaks; the polarity of the lead does not matter.
    """
    x = np.asarray(ecg, dtype=np.float64)
    energy = bandpass(x, fs, 5.0, min(30.0, 0.45 * fs)) ** 2
    peaks, _ = signal.find_peaks(energy, height=np.percentile(energy, 99) / 3, distance=max(1, int(0.3 * fs)))
    if len(peaks) < 2:
        raise ConfigError("fewer than two R peaks found; is this an ECG channel?")
    return float(60.0 * fs / np.median(np.diff(peaks)))
