"""Standard rPPG post-processing: detrending, band-pass, spectral heart rate, windowed heart rate and an SNR.

The steps and their defaults follow rPPG-Toolbox's per-video FFT evaluation (Liu et al., "rPPG-Toolbox: Deep
Remote PPG Toolbox", NeurIPS 2023 Datasets and Benchmarks; ``evaluation/post_process.py``,
``calculate_metric_per_video`` with ``hr_method='FFT'``), reimplemented here:

1. smoothness-priors detrending (Tarvainen, Ranta-aho, Karjalainen, IEEE TBME 2002) with lambda = 100 — solved here
   as a banded linear system (the toolbox inverts a dense T x T matrix, which needs T^2 memory);
2. a zero-phase (forward-backward) Butterworth band-pass, 0.75-2.5 Hz (45-150 bpm). The order is an argument:
   the toolbox calls ``scipy.signal.butter(1, ...)`` (a first-order prototype, i.e. a second-order band-pass);
   our default ``order=2`` is a fourth-order band-pass with steeper edges. On the UBFC-rPPG development clips
   the reference rates are the same with both, and the estimates differ only where two spectral peaks are
   nearly equal (``docs/rppg.md``);
3. the heart rate is the frequency of the largest periodogram bin (no window, no detrending) between 0.75 and
   2.5 Hz, with the FFT length the next power of two of the signal length;
4. the SNR (de Haan & Jeanne, IEEE TBME 2013, as the toolbox computes it): the power within +-6 bpm of the heart
   rate and of its second harmonic over the power of the rest of the 0.75-2.5 Hz band, in dB. The toolbox centres it
   on the reference heart rate; without a reference it is centred here on the estimated one, which makes it a
   quality figure: a clean pulse puts most of the band's power under its peak and harmonic, noise does not.

Windowed heart rate (our addition, for heart rate over time): the post-processed pulse of the whole clip is cut
into ``window_s`` windows every ``step_s`` seconds and each gets steps 3-4, with the FFT zero-padded to a 1 bpm
grid (a 10 s window's own resolution is 6 bpm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, signal, sparse

from ..errors import ConfigError

#: The heart-rate band of the post-processing, in Hz (45-150 bpm; rPPG-Toolbox's).
PULSE_BAND = (0.75, 2.5)
#: Half-width (Hz) of the spectral bands around the peak and its harmonic counted as signal by :func:`snr_db`.
SNR_HALF_WIDTH_HZ = 6.0 / 60.0


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for 0)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def smoothness_detrend(x: np.ndarray, lam: float = 100.0) -> np.ndarray:
    """Remove the slow trend of ``x``: ``x - (I + lam^2 D'D)^-1 x`` with ``D`` the second-difference matrix.

    The smoothness-priors method of Tarvainen et al. (2002); ``lam`` sets the cut-off (100 at 30 fps passes
    everything above about 0.05 Hz). Solved as a symmetric banded system, so it is O(T) in time and memory.
    """
    x = np.asarray(x, dtype=np.float64)
    length = len(x)
    if length < 3:
        return x - x.mean()
    second = sparse.diags([np.ones(length - 2), -2 * np.ones(length - 2), np.ones(length - 2)], [0, 1, 2],
                          shape=(length - 2, length))
    system = (sparse.identity(length) + lam**2 * (second.T @ second)).tocsr()
    upper = np.zeros((3, length))
    for offset in range(3):
        upper[2 - offset, offset:] = system.diagonal(offset)
    return x - linalg.solveh_banded(upper, x)


def pulse_bandpass(x: np.ndarray, fps: float, band: tuple[float, float] = PULSE_BAND, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``filtfilt`` of the transfer function, as the toolbox does); ``order`` is
    scipy's (the prototype order: a band-pass of ``2 * order``; the toolbox uses 1)."""
    low, high = band
    nyquist = fps / 2
    if not 0 < low < high < nyquist:
        raise ConfigError(f"band {band} Hz must satisfy 0 < low < high < Nyquist ({nyquist} Hz at {fps} fps)")
    b, a = signal.butter(order, [low / nyquist, high / nyquist], btype="bandpass")
    x = np.asarray(x, dtype=np.float64)
    if len(x) <= 3 * max(len(a), len(b)):
        raise ConfigError(f"{len(x)} samples are too few to band-pass (more than {3 * max(len(a), len(b))} needed)")
    return signal.filtfilt(b, a, x)


def postprocess_pulse(raw: np.ndarray, fps: float, band: tuple[float, float] = PULSE_BAND, order: int = 2,
                      detrend_lambda: float = 100.0) -> np.ndarray:
    """Steps 1-2 of the module docstring: smoothness-priors detrending, then the zero-phase band-pass."""
    return pulse_bandpass(smoothness_detrend(raw, detrend_lambda), fps, band, order)


def periodogram(x: np.ndarray, fps: float, nfft: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and power of the plain periodogram (no window, no detrending); ``nfft`` defaults to the next
    power of two of the length."""
    x = np.asarray(x, dtype=np.float64)
    return signal.periodogram(x, fs=fps, nfft=nfft or next_power_of_two(len(x)), detrend=False)


def peak_frequency(freqs: np.ndarray, power: np.ndarray, band: tuple[float, float] = PULSE_BAND) -> float:
    """The frequency (Hz) of the largest spectral bin within ``band`` (inclusive)."""
    inside = np.flatnonzero((freqs >= band[0]) & (freqs <= band[1]))
    if inside.size == 0:
        raise ConfigError(f"no spectral bin between {band[0]} and {band[1]} Hz; the signal is too short")
    return float(freqs[inside[np.argmax(power[inside])]])


def snr_db(freqs: np.ndarray, power: np.ndarray, frequency: float, band: tuple[float, float] = PULSE_BAND,
           half_width: float = SNR_HALF_WIDTH_HZ) -> float:
    """Power within ``half_width`` of ``frequency`` and of ``2 * frequency`` over the rest of ``band``, in dB.

    ``-inf``-free: returns 0.0 when the rest of the band holds no power (the toolbox's convention).
    """
    near = (np.abs(freqs - frequency) <= half_width) | (np.abs(freqs - 2 * frequency) <= half_width)
    rest = (freqs >= band[0]) & (freqs <= band[1]) & ~near
    noise = float(power[rest].sum())
    peak = float(power[near].sum())
    if noise <= 0 or peak <= 0:
        return 0.0
    return float(10.0 * np.log10(peak / noise))


@dataclass(frozen=True)
class HeartRateEstimate:
    """A heart rate (bpm) and the SNR (dB) of the pulse around it."""

    heart_rate: float
    snr_db: float


def spectral_heart_rate(pulse: np.ndarray, fps: float, band: tuple[float, float] = PULSE_BAND,
                        nfft: int | None = None) -> HeartRateEstimate:
    """Steps 3-4 of the module docstring on an already post-processed pulse."""
    freqs, power = periodogram(pulse, fps, nfft)
    frequency = peak_frequency(freqs, power, band)
    return HeartRateEstimate(60.0 * frequency, snr_db(freqs, power, frequency, band))


@dataclass(frozen=True)
class WindowedHeartRate:
    """Heart rate over time: one estimate per window.

    Attributes:
        times: window centres in seconds from the first frame.
        heart_rates: bpm per window.
        snrs: SNR (dB) per window.
        window_s, step_s: window length and step in seconds.
    """

    times: np.ndarray
    heart_rates: np.ndarray
    snrs: np.ndarray
    window_s: float
    step_s: float

    def to_dict(self) -> dict:
        return {"window_s": self.window_s, "step_s": self.step_s, "times": self.times.round(3).tolist(),
                "heart_rates": self.heart_rates.round(2).tolist(), "snr_db": self.snrs.round(2).tolist()}


def windowed_heart_rate(pulse: np.ndarray, fps: float, window_s: float = 10.0, step_s: float = 1.0,
                        band: tuple[float, float] = PULSE_BAND, resolution_hz: float = 1.0 / 60.0
                        ) -> WindowedHeartRate:
    """Heart rate in sliding windows of a post-processed pulse (a clip shorter than a window gives one window of
    the whole clip); the FFT of each window is zero-padded to at least ``resolution_hz`` per bin."""
    if window_s <= 0 or step_s <= 0:
        raise ConfigError(f"window_s={window_s} and step_s={step_s} must be positive")
    pulse = np.asarray(pulse, dtype=np.float64)
    window = min(len(pulse), int(round(window_s * fps)))
    step = max(1, int(round(step_s * fps)))
    nfft = next_power_of_two(max(window, int(np.ceil(fps / resolution_hz))))
    starts = range(0, len(pulse) - window + 1, step)
    estimates = [spectral_heart_rate(pulse[start:start + window], fps, band, nfft) for start in starts]
    times = np.array([(start + window / 2) / fps for start in starts])
    return WindowedHeartRate(times, np.array([e.heart_rate for e in estimates]),
                             np.array([e.snr_db for e in estimates]), float(window_s), float(step_s))
