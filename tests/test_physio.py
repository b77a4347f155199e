"""rPPG (POS/CHROM), heart rate, time-frequency maps, face region and the BDF/EDF reader/writer."""

from __future__ import annotations

import numpy as np
import pytest

from facet_vlm.data.synthetic_video import generate_videos
from facet_vlm.errors import ConfigError, FormatError
from facet_vlm.io.bdf import read_bdf, read_bdf_labels, write_bdf
from facet_vlm.physio import (
    bandpass,
    chrom,
    ecg_heart_rate,
    face_box,
    haar_cascade_path,
    heart_rate,
    mean_skin_rgb,
    physio_inputs,
    pos,
    skin_mask,
    tfr,
    tfr_frequencies,
)


@pytest.fixture(scope="module")
def videos():
    return generate_videos(subjects=2, trials_per_subject=2, fps=30, seconds=8, size=48, seed=3)


def test_pos_heart_rate_within_3_bpm(videos):
    for video in videos:
        trace = mean_skin_rgb(video.frames)
        for waveform in (pos(trace, video.fps), chrom(trace, video.fps)):
            assert abs(heart_rate(waveform, video.fps) - video.hr_bpm) < 3.0


def test_pos_heart_rate_survives_noise_and_lighting_drift(videos):
    rng = np.random.default_rng(0)
    for video in videos:
        t = np.arange(len(video.frames)) / video.fps
        # Brightness ramps 0.75 -> 1.15 with a slow 0.08 Hz flicker on top, plus strong extra sensor noise.
        gain = np.linspace(0.75, 1.15, len(t)) * (1 + 0.05 * np.sin(2 * np.pi * 0.08 * t))
        noisy = video.frames * gain[:, None, None, None] + rng.normal(0, 6.0, video.frames.shape)
        noisy = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
        assert abs(heart_rate(pos(noisy, video.fps), video.fps) - video.hr_bpm) < 3.0


def test_pos_accepts_frames_or_trace(videos):
    video = videos[0]
    np.testing.assert_allclose(pos(video.frames, video.fps), pos(mean_skin_rgb(video.frames), video.fps))


@pytest.mark.parametrize("method", ["welch", "fft"])
def test_heart_rate_of_a_pure_tone(method):
    fps, frequency = 30.0, 1.23
    t = np.arange(int(20 * fps)) / fps
    estimate = heart_rate(np.sin(2 * np.pi * frequency * t), fps, method=method)
    assert abs(estimate - 60 * frequency) < 0.3


def test_bandpass_keeps_pulse_band_and_removes_drift_and_noise():
    fps = 30.0
    t = np.arange(int(30 * fps)) / fps
    pulse = np.sin(2 * np.pi * 1.5 * t)
    filtered = bandpass(pulse + 3 * np.sin(2 * np.pi * 0.05 * t) + np.sin(2 * np.pi * 10 * t), fps)
    core = slice(int(3 * fps), int(27 * fps))  # away from the edges
    assert np.abs(filtered[core] - pulse[core]).max() < 0.1
    with pytest.raises(ConfigError, match="Nyquist"):
        bandpass(pulse, 6.0, 0.7, 4.0)


def test_ecg_heart_rate_matches_the_synthetic_truth(videos):
    for video in videos:
        assert abs(ecg_heart_rate(video.ecg, 256.0) - video.hr_bpm) < 2.0
        assert abs(ecg_heart_rate(-video.ecg, 256.0) - video.hr_bpm) < 2.0


@pytest.mark.parametrize("method", ["stft", "morlet"])
def test_tfr_is_fixed_size_and_peaks_at_the_heart_rate(method):
    rng = np.random.default_rng(1)
    size = (32, 24)
    freqs = tfr_frequencies(size)
    for fps, seconds, frequency in ((30.0, 8.0, 1.2), (25.0, 12.0, 1.8)):
        t = np.arange(int(seconds * fps)) / fps
        clean = np.sin(2 * np.pi * frequency * t)
        # Noise: white noise, a large illumination drift and a motion spike 20x the pulse amplitude.
        noisy = clean + 0.5 * rng.normal(size=t.size) + 5 * t / seconds
        noisy[len(t) // 2: len(t) // 2 + 3] += 20
        for waveform in (clean, noisy):
            tf = tfr(waveform, fps, method=method, size=size)
            assert tf.shape == size and tf.dtype == np.float32 and np.isfinite(tf).all()
            ridge = freqs[np.argmax(tf.mean(axis=1))]
            assert abs(ridge - frequency) <= (freqs[1] - freqs[0]) * 1.5
        # Per-map normalisation: the gain of the pulse does not matter.
        np.testing.assert_allclose(tfr(7.0 * clean, fps, method=method, size=size),
                                   tfr(clean, fps, method=method, size=size), atol=1e-4)


def test_tfr_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="method"):
        tfr(np.zeros(100), 30.0, method="wigner")
    with pytest.raises(ConfigError, match="1-D"):
        tfr(np.zeros((10, 2)), 30.0)


def test_face_region_finds_the_drawn_face(videos):
    frame = videos[0].frames[0]
    x, y, w, h = face_box(videos[0].frames)
    height, width = frame.shape[:2]
    assert x <= width / 2 <= x + w and y <= height / 2 <= y + h  # the face is drawn around the centre
    assert w < width and h < height  # the background is not skin
    mask = skin_mask(frame)
    assert mask[height // 2, width // 2] and not mask[0, 0]
    cascade = haar_cascade_path()
    assert cascade is None or cascade.is_file()


def test_physio_inputs_shapes(videos):
    inputs = physio_inputs(videos[0].frames, videos[0].fps, num_frames=4, image_size=32, tfr_size=(16, 12))
    assert inputs["pixel_values"].shape == (4, 3, 32, 32)
    assert 0.0 <= inputs["pixel_values"].min() and inputs["pixel_values"].max() <= 1.0
    assert inputs["tfr_values"].shape == (1, 16, 12)


@pytest.mark.parametrize("kind, bits", [("BDF", 24), ("EDF", 16)])
def test_bdf_edf_round_trip(tmp_path, kind, bits):
    rng = np.random.default_rng(2)
    signals = {"EXG1": rng.normal(0, 500, 512), "Resp": rng.normal(0, 2, 64), "Status": np.zeros(512)}
    path = write_bdf(tmp_path / f"x.{kind.lower()}", signals, sample_rates=[256, 32, 256],
                     physical_dimensions=["uV", "mV", "Boolean"], kind=kind, patient="Part_1")
    data = read_bdf(path)
    assert data.kind == kind and data.labels == list(signals) and data.sample_rates == [256.0, 32.0, 256.0]
    assert data.physical_dimensions == ["uV", "mV", "Boolean"] and data.patient == "Part_1"
    assert data.start is not None and data.start.year == 2009
    for label, original in signals.items():
        values, _ = data.channel(label)
        step = (np.ptp(original) or 2.0) / (2**bits - 1)  # a flat channel is written with range [-1, 1] around it
        np.testing.assert_allclose(values[: len(original)], original, atol=step + 1e-6)
    subset = read_bdf(path, channels=["Resp"])
    assert subset.labels == ["Resp"] and len(subset.signals[0]) == 64
    assert read_bdf_labels(path) == list(signals)


def test_bdf_bad_files_raise_format_errors_naming_the_file(tmp_path):
    good = write_bdf(tmp_path / "good.bdf", {"EXG1": np.arange(256.0)}, sample_rates=256)
    raw = good.read_bytes()
    cases = {
        "magic.bdf": (b"XXXXXXXX" + raw[8:], "magic"),
        "short.bdf": (raw[:100], "256 bytes"),
        "truncated.bdf": (raw[:-10], "truncated"),
        "number.bdf": (raw[:252] + b"ab  " + raw[256:], "not a number"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FormatError, match=message) as error:
            read_bdf(path)
        assert name in str(error.value)
    with pytest.raises(FormatError, match="no channel"):
        read_bdf(good, channels=["EXG9"])


def test_person_relative_maps_take_each_persons_own_mean_away():
    """Two people whose maps differ by a constant level (a resting heart rate) and vary the same way per clip: the
    relative maps are the same for both, each person's maps sum to zero, a single clip becomes zeros."""
    from couple import PhysioPromptConfig
    from facet_vlm.physio import person_relative_maps

    rng = np.random.default_rng(0)
    per_clip = rng.normal(0, 1, (4, 1, 8, 8)).astype(np.float32)
    per_clip -= per_clip.mean(axis=0)
    maps = np.concatenate([per_clip + 3.0, per_clip - 2.0, rng.normal(0, 1, (1, 1, 8, 8)).astype(np.float32)])
    persons = ["a"] * 4 + ["b"] * 4 + ["c"]
    relative = person_relative_maps(maps, persons)
    np.testing.assert_allclose(relative[:4], relative[4:8], atol=1e-5)
    np.testing.assert_allclose(relative[:4], per_clip, atol=1e-5)
    np.testing.assert_allclose(relative[8], 0.0)
    with pytest.raises(ConfigError, match="person ids"):
        person_relative_maps(maps, persons[:-1])
    with pytest.raises(ValueError, match="pulse_reference"):
        PhysioPromptConfig(pulse_reference="population")
