"""Fixed-size, noise-robust time-frequency representations (TFRs) of a pulse waveform.

The TFR is the model's view of the pulse: a ``(F, T')`` image whose rows are frequencies from ``fmin`` to
``fmax`` (linear grid) and whose columns are time. Robustness to the noise of real rPPG comes from five steps:

1. detrend and zero-phase band-pass to ``[fmin, fmax]`` — removes illumination drift and high-frequency
   sensor noise before any spectrum is taken;
2. robust amplitude clipping at ``clip_mad`` median absolute deviations — a head movement or a lighting jump
   becomes a bounded burst instead of dominating the map;
3. magnitude of a windowed transform — an STFT with a ``window_s`` Hann window (long enough to average several
   beats) or a complex-Morlet CWT with ``cycles`` cycles per wavelet;
4. ``log1p`` compression of the magnitude, so weak harmonics stay visible next to the fundamental;
5. per-map robust normalisation: subtract the median, divide by 1.4826 x MAD and clip to +-5 — removes the
   per-video gain (skin tone, camera exposure, distance), which is a subject-specific nuisance.

The grid is fixed (``size``), so clips of any length and frame rate give maps of one shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal

from ..errors import ConfigError
from .rppg import bandpass

_METHODS = ("stft", "morlet")


def _robust_clip(x: np.ndarray, clip_mad: float) -> np.ndarray:
    median = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - median)) + 1e-12
    return np.clip(x, median - clip_mad * mad, median + clip_mad * mad)


def _stft_magnitude(x: np.ndarray, fps: float, freqs: np.ndarray, window_s: float) -> np.ndarray:
    segment = min(len(x), max(8, int(round(window_s * fps))))
    hop = max(1, segment // 8)
    nfft = max(segment, int(2 ** np.ceil(np.log2(fps / 0.02))))
    grid, _, spectrum = signal.stft(x, fs=fps, window="hann", nperseg=segment, noverlap=segment - hop, nfft=nfft,
                                    boundary="even", padded=True)
    magnitude = np.abs(spectrum)
    # Linear interpolation of each time column onto the requested frequency grid.
    return np.stack([np.interp(freqs, grid, column) for column in magnitude.T], axis=1)


def _morlet_magnitude(x: np.ndarray, fps: float, freqs: np.ndarray, cycles: float) -> np.ndarray:
    rows = []
    for frequency in freqs:
        sigma_t = cycles / (2 * np.pi * frequency)
        half = min(int(np.ceil(3 * sigma_t * fps)), len(x) - 1)
        t = np.arange(-half, half + 1) / fps
        wavelet = np.exp(2j * np.pi * frequency * t) * np.exp(-(t**2) / (2 * sigma_t**2))
        wavelet /= np.abs(wavelet).sum()
        rows.append(np.abs(signal.fftconvolve(x, wavelet, mode="same")))
    return np.stack(rows)


def _resample_columns(magnitude: np.ndarray, columns: int) -> np.ndarray:
    """Average (or interpolate, if there are too few) the time axis onto ``columns`` equal bins."""
    n = magnitude.shape[1]
    if n >= columns:
        edges = np.linspace(0, n, columns + 1)
        return np.stack([magnitude[:, int(a):max(int(a) + 1, int(b))].mean(axis=1)
                         for a, b in zip(edges[:-1], edges[1:])], axis=1)
    source = np.linspace(0, 1, n)
    target = np.linspace(0, 1, columns)
    return np.stack([np.interp(target, source, row) for row in magnitude])


def tfr(waveform: np.ndarray, fps: float, method: str = "stft", size: tuple[int, int] = (64, 64),
        fmin: float = 0.7, fmax: float = 4.0, window_s: float = 4.0, cycles: float = 6.0,
        clip_mad: float = 4.0) -> np.ndarray:
    """A fixed-size log-magnitude time-frequency map of a pulse waveform, robust-normalised per map.

    Args:
        waveform: ``(T,)`` pulse (POS/CHROM output, or a PPG/ECG-derived pulse resampled to ``fps``).
        fps: its sample rate.
        method: ``"stft"`` (Hann-windowed short-time Fourier transform) or ``"morlet"`` (complex Morlet CWT).
        size: ``(F, T')`` rows (frequencies ``fmin..fmax``, row 0 = ``fmin``) and columns (time bins).
        fmin, fmax: frequency range in Hz (default: 42..240 bpm).
        window_s: STFT window in seconds (clipped to the clip length).
        cycles: Morlet wavelet cycles (time-frequency trade-off).
        clip_mad: amplitude clipping in robust standard deviations before the transform.

    Returns:
        float32 ``(F, T')`` map with median 0 and robust scale 1, clipped to +-5.
    """
    if method not in _METHODS:
        raise ConfigError(f"tfr method must be one of {_METHODS}, got {method!r}")
    rows, columns = size
    if rows < 1 or columns < 1:
        raise ConfigError(f"tfr size must be positive, got {size}")
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim != 1 or len(x) < 8:
        raise ConfigError(f"tfr needs a 1-D waveform of at least 8 samples, got shape {x.shape}")
    x = signal.detrend(x)
    x = bandpass(x, fps, fmin, fmax)
    x = _robust_clip(x, clip_mad)
    freqs = np.linspace(fmin, fmax, rows)
    if method == "stft":
        magnitude = _stft_magnitude(x, fps, freqs, window_s)
    else:
        magnitude = _morlet_magnitude(x, fps, freqs, cycles)
    magnitude = np.log1p(magnitude / (np.median(magnitude) + 1e-12))
    magnitude = _resample_columns(magnitude, columns)
    median = np.median(magnitude)
    scale = 1.4826 * np.median(np.abs(magnitude - median)) + 1e-6
    return np.clip((magnitude - median) / scale, -5.0, 5.0).astype(np.float32)


def tfr_frequencies(size: tuple[int, int] = (64, 64), fmin: float = 0.7, fmax: float = 4.0) -> np.ndarray:
    """The frequency (Hz) of each row of a :func:`tfr` map."""
    return np.linspace(fmin, fmax, size[0])


def person_relative_maps(maps: np.ndarray, persons: Sequence[Any], dtype: Any = np.float32) -> np.ndarray:
    """Each map minus the mean map of the same person's maps (a person's own pulse level as the reference; the same
    centring serves any per-clip array, e.g. features in `facet_vlm.benchmarks.physio_readout`).

    Args:
        maps: ``(N, ...)`` pulse maps (e.g. ``tfr_values`` of N clips).
        persons: who each map belongs to (N ids).
        dtype: of the result.

    Returns:
        ``(N, ...)``; a person with a single clip gets zeros (their only clip is their reference), which is why a
        caller should give several clips per person.
    """
    maps = np.asarray(maps, dtype=dtype)
    persons = np.asarray([str(person) for person in persons])
    if len(maps) != len(persons):
        raise ConfigError(f"{len(maps)} pulse maps but {len(persons)} person ids")
    relative = maps.copy()
    for person in np.unique(persons):
        rows = persons == person
        relative[rows] -= maps[rows].mean(axis=0)
    return relative
