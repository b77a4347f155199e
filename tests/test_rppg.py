"""The rPPG path on a real face: MTCNN tracking and landmark skin regions on a clip made from scikit-image's
astronaut photograph with a known pulse, the standard post-processing and quality flag, streaming in bounded memory,
refusal of files that are not videos, the UBFC-rPPG reader and benchmark, and the MAHNOB/DEAP loaders as users have
the data."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from facet_vlm.data.photo_pulse_video import (
    ASTRONAUT_FACE,
    PhotoPulseSettings,
    photo_pulse_frames,
    write_photo_pulse_video,
)
from facet_vlm.errors import DatasetLayoutError, FormatError
from facet_vlm.physio import (
    FaceTracker,
    NoFaceError,
    PulseConfig,
    measure_pulse,
    postprocess_pulse,
    probe_video,
    pulse_from_trace,
    read_video,
    smoothness_detrend,
    spectral_heart_rate,
    windowed_heart_rate,
    write_video,
)
from facet_vlm.physio.pulse import FrameSampler, analyze_face_video

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_clip(astronaut):
    """10 s at 30 fps of the astronaut photograph with a 78 bpm pulse in the face's skin, a 54 bpm distractor outside
    the face, slow head motion and sensor noise."""
    settings = PhotoPulseSettings(heart_rate=78.0)
    return np.stack(list(photo_pulse_frames(astronaut, 10.0, settings, seed=1))), settings


def test_mtcnn_finds_the_real_face_and_recovers_its_pulse(astronaut_clip):
    frames, settings = astronaut_clip
    result = measure_pulse(frames, settings.fps)
    assert result.face.face_fraction > 0.95 and result.face.fallback_frames == 0
    # By default CHROM, with the face detected on every frame (no landmarks interpolated between keyframes).
    assert result.method == "chrom" and PulseConfig().tracker(settings.fps).detect_every == 1
    assert abs(result.heart_rate - settings.heart_rate) < 3.0
    assert not result.low_confidence, result.reasons
    # The heart rate over time follows it too.
    assert np.all(np.abs(result.windows.heart_rates - settings.heart_rate) < 4.0)
    # The skin-colour fallback alone does not use the face's landmarks and is reported as such.
    fallback = measure_pulse(frames, settings.fps, PulseConfig(detector="skin"))
    assert fallback.face.face_fraction == 0.0 and fallback.low_confidence
    assert any("face was detected on 0 %" in reason for reason in fallback.reasons)
    # POS with a detection every 0.2 s (the physio model's input setting: every 6th frame here) finds it too.
    keyframes = measure_pulse(frames, settings.fps, PulseConfig(detect_every_s=0.2, method="pos"))
    assert PulseConfig(detect_every_s=0.2).tracker(settings.fps).detect_every == 6
    assert abs(keyframes.heart_rate - settings.heart_rate) < 3.0 and keyframes.method == "pos"


def test_skin_regions_are_forehead_and_cheeks_of_the_face(astronaut_clip):
    frames, _ = astronaut_clip
    cx, cy, ax, ay = ASTRONAUT_FACE
    tracker = FaceTracker("mtcnn", detect_every=5)
    for tracked in tracker.track(frames[:12]):
        assert tracked.source in ("detector", "held") and len(tracked.masks) == 3
        x0, y0, x1, y1 = tracked.mask_box
        ys, xs = np.nonzero(tracked.mask)
        xs, ys = xs + x0, ys + y0
        # Every region pixel lies on the face (the ellipse, widened by the 2 px head motion and a margin) ...
        assert np.all(((xs - cx) / (ax + 6)) ** 2 + ((ys - cy) / (ay + 6)) ** 2 <= 1.0)
        # ... and none on the eyes or the mouth: a disc around each eye and mouth corner is left out.
        for point in tracked.face.points[[0, 1, 3, 4]]:
            assert np.min(np.hypot(xs - point[0], ys - point[1])) > 3.0
        forehead, left, right = (np.nonzero(mask)[0].mean() + y0 for mask in tracked.masks)
        eyes_y = tracked.face.points[:2, 1].mean()
        assert forehead < eyes_y < min(left, right)


def test_no_face_is_an_error_or_a_reported_fallback(tmp_path, astronaut):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 60, (90, 64, 64, 3), dtype=np.uint8)  # dark noise: no face, no skin colour
    with pytest.raises(NoFaceError, match="no face"):
        measure_pulse(noise, 30.0, PulseConfig(detector="mtcnn"))
    with pytest.raises(NoFaceError):
        measure_pulse(noise, 30.0)
    # Skin-coloured but faceless frames (the photograph's lower half: suit and flag): the fallback is used and said.
    body = np.repeat(astronaut[None, 300:, :, :], 90, axis=0)
    result = measure_pulse(body, 30.0)
    assert result.face.detector_frames == 0 and result.face.fallback_frames > 0
    assert result.low_confidence and "skin-colour fallback" in result.face.summary()
    # Frames smaller than the smallest face searched for: no detection is attempted, the fallback is reported.
    tiny = measure_pulse(np.repeat(astronaut[None, 60:180:4, 170:290:4], 90, axis=0), 30.0)
    assert tiny.face.detector_frames == 0 and tiny.face.fallback_frames == 90


def test_streaming_keeps_memory_flat_on_a_long_clip(tmp_path, astronaut):
    """Peak traced allocations while measuring a 4x longer clip stay about the same, and far below the decoded
    clip (the speed and the 10-minute figure are measured by ``bench.py rppg-stream``)."""
    settings = PhotoPulseSettings(size=(160, 120), heart_rate=70.0)
    peaks = {}
    for seconds in (10, 40):
        path = tmp_path / f"clip_{seconds}.avi"
        write_photo_pulse_video(path, astronaut, seconds, settings)
        tracemalloc.start()
        result = measure_pulse(path, config=PulseConfig(detector="skin"))
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.frames == seconds * 30
    decoded = 40 * 30 * 160 * 120 * 3
    assert peaks[40] < 1.5 * peaks[10] + 2**20, peaks
    assert peaks[40] < decoded / 4, (peaks, decoded)


def test_files_that_are_not_videos_are_refused_by_name(tmp_path, astronaut):
    import cv2

    text = tmp_path / "notes.mp4"
    text.write_text("heart rate 42\n" * 50)
    image = tmp_path / "face.avi"
    cv2.imwrite(str(tmp_path / "face.png"), astronaut)
    image.write_bytes((tmp_path / "face.png").read_bytes())
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    for path, looks_like in ((text, "text"), (image, "a PNG image"), (empty, "an empty file")):
        for reader in (probe_video, read_video, measure_pulse):
            with pytest.raises(FormatError, match=f"not a video file: it looks like {looks_like}") as error:
                reader(path)
            assert path.name in str(error.value)
    with pytest.raises(FormatError, match="not found"):
        measure_pulse(tmp_path / "missing.mp4")
    clip = tmp_path / "clip.avi"
    write_video(clip, np.zeros((5, 32, 32, 3), np.uint8), 25.0)
    info = probe_video(clip)
    assert info.container == "AVI" and info.fps == pytest.approx(25.0) and (info.width, info.height) == (32, 32)


def test_post_processing_detrends_band_passes_and_finds_the_peak():
    fps = 30.0
    t = np.arange(int(40 * fps)) / fps
    # Smoothness-priors detrending equals its dense definition x - (I + lambda^2 D'D)^-1 x.
    x = np.sin(2 * np.pi * 1.3 * t[:300]) + 0.01 * t[:300] ** 2
    d = np.diff(np.eye(300), n=2, axis=0)
    dense = x - np.linalg.solve(np.eye(300) + 100.0**2 * d.T @ d, x)
    np.testing.assert_allclose(smoothness_detrend(x, 100.0), dense, atol=1e-8)
    # A 66 bpm pulse under a strong drift and a 3 Hz flicker (outside the 0.75-2.5 Hz band).
    raw = np.sin(2 * np.pi * 1.1 * t) + 4 * t / t[-1] + 2 * np.sin(2 * np.pi * 3.0 * t)
    estimate = spectral_heart_rate(postprocess_pulse(raw, fps), fps)
    assert abs(estimate.heart_rate - 66.0) < 1.0 and estimate.snr_db > 5
    # A heart rate that steps from 60 to 96 bpm half-way is followed over time.
    steps = np.where(t < 20, 1.0, 1.6)
    pulse = postprocess_pulse(np.sin(2 * np.pi * np.cumsum(steps) / fps), fps)
    windows = windowed_heart_rate(pulse, fps, window_s=8.0, step_s=2.0)
    early, late = windows.heart_rates[windows.times < 14], windows.heart_rates[windows.times > 26]
    assert np.all(np.abs(early - 60) < 2) and np.all(np.abs(late - 96) < 2)


def test_low_confidence_flags_noise_and_passes_a_clear_pulse():
    rng = np.random.default_rng(3)
    fps, frames = 30.0, 900
    t = np.arange(frames) / fps
    skin = np.array([180.0, 120.0, 100.0])
    noise = skin + rng.normal(0, 0.5, (frames, 3))
    flagged = pulse_from_trace(noise, fps)
    assert flagged.low_confidence and "SNR" in flagged.reasons[0]
    pulse = skin * (1 - 0.004 * np.sin(2 * np.pi * 1.4 * t)[:, None] * np.array([0.33, 0.77, 0.53]))
    clear = pulse_from_trace(pulse + rng.normal(0, 0.3, (frames, 3)), fps)
    assert not clear.low_confidence and abs(clear.heart_rate - 84.0) < 1.5
    assert clear.snr_db > clear.snr_threshold_db > flagged.snr_db


def test_frame_sampler_spreads_crops_over_a_stream_of_unknown_length():
    for total in (7, 100, 1000, 12345):
        sampler = FrameSampler(8)
        for index in range(total):
            if sampler.wants(index):
                sampler.add(index, index)
        chosen = np.array(sampler.select(total))
        targets = np.linspace(0, total - 1, 8)
        assert len(sampler.items) <= 4 * 8 + 1
        assert np.all(np.abs(chosen - targets) <= max(1, total / 32)), (total, chosen)
    known = FrameSampler(4, expected=50)
    for index in range(50):
        if known.wants(index):
            known.add(index, index)
    assert known.select(50) == [0, 16, 33, 49]


def test_crops_follow_the_tracked_face(astronaut_clip):
    frames, settings = astronaut_clip
    result, crops = analyze_face_video(frames, settings.fps, num_crops=3, crop_size=48)
    assert crops.shape == (3, 48, 48, 3) and crops.dtype == np.uint8
    # The crop is centred on the face: its centre pixel is skin, not the dark background or the white suit.
    centre = crops[:, 24, 24].astype(float)
    assert np.all(centre[:, 0] > centre[:, 2] + 20)


def _write_ubfc_subject(root, number, photo, heart_rate, seconds=10.0):
    folder = root / f"subject{number}"
    folder.mkdir(parents=True)
    settings = PhotoPulseSettings(heart_rate=heart_rate, size=(320, 240))
    write_photo_pulse_video(folder / "vid.avi", photo, seconds, settings, seed=number)
    frames = int(seconds * settings.fps)
    time = np.arange(frames) / settings.fps
    ppg = np.sin(2 * np.pi * heart_rate / 60 * time) + 0.2 * np.sin(4 * np.pi * heart_rate / 60 * time)
    oximeter = np.full(frames, heart_rate)
    (folder / "ground_truth.txt").write_text("\n".join(" ".join(f"{v:.6e}" for v in row)
                                                       for row in (ppg, oximeter, time)) + "\n")


def test_rppg_benchmark_on_a_generated_ubfc_folder(tmp_path, astronaut):
    from facet_vlm.benchmarks.rppg import benchmark_rppg, heart_rate_metrics
    from facet_vlm.data.ubfc import list_ubfc_subjects, read_ubfc_ground_truth, reference_heart_rate

    _write_ubfc_subject(tmp_path, 2, astronaut, 72.0)
    _write_ubfc_subject(tmp_path, 7, astronaut, 96.0)
    truth = read_ubfc_ground_truth(tmp_path / "subject7" / "ground_truth.txt")
    assert truth.sample_rate == pytest.approx(30.0) and len(truth.ppg) == 300
    assert abs(reference_heart_rate(truth.ppg, 300, 30.0) - 96.0) < 2.0
    with pytest.raises(DatasetLayoutError, match=r"subject\(s\) \[5\]"):
        list_ubfc_subjects(tmp_path, [2, 5])
    benchmark = benchmark_rppg(tmp_path, [7, 2])
    assert [r["subject"] for r in benchmark.records] == [2, 7]
    for record in benchmark.records:
        assert {"subject", "heart_rate", "fps", "frames", "reference_heart_rate", "snr_db", "low_confidence"} <= set(
            record)
        assert record["frames"] == 300 and abs(record["error"]) < 3.0
    assert benchmark.metrics["subjects"] == 2 and benchmark.metrics["MAE"] < 3.0
    metrics = heart_rate_metrics([70.0, 100.0, 90.0], [72.0, 96.0, 90.0])
    assert metrics["MAE"] == pytest.approx(2.0) and metrics["RMSE"] == pytest.approx(np.sqrt(20 / 3))
    assert metrics["MAPE"] == pytest.approx((2 / 72 + 4 / 96) / 3 * 100) and metrics["Pearson"] > 0.9
    (tmp_path / "subject2" / "ground_truth.txt").write_text("1 2 3\n4 5\n")
    with pytest.raises(FormatError, match="3 rows"):
        read_ubfc_ground_truth(tmp_path / "subject2" / "ground_truth.txt")


def _session_xml(number, valence=3, arousal=7, extra="", tracks=""):
    return (f'<session sessionId="{number}" feltVlnc="{valence}" feltArsl="{arousal}" feltEmo="4" {extra}>'
            f'<subject id="{number % 2 + 1}"/>{tracks}</session>')


def test_mahnob_missing_video_is_reported_not_fatal_and_labels_only_mode(tmp_path):
    from facet_vlm.data.mahnob import load_mahnob

    sessions = tmp_path / "Sessions"
    colour = 'P1-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_{n}.avi'
    for number in (2, 4, 6):
        folder = sessions / str(number)
        folder.mkdir(parents=True)
        track = f'<track type="Video" color="1" camera="1" filename="{colour.format(n=number)}"/>'
        extra = ('feltCtrl="2" feltPred="9" mediaFile="53.avi" cutLenSec="136.5244" vidRate="60.9708"'
                 if number == 2 else "")
        (folder / "session.xml").write_text(_session_xml(number, extra=extra, tracks=track))
        if number != 4:  # session 4's colour video was not downloaded
            write_video(folder / colour.format(n=number), np.zeros((3, 16, 16, 3), np.uint8), 30)
    with pytest.warns(UserWarning, match=r"1 session\(s\) have no colour video .*4 \(P1-Rec1.*_C_Section_4.avi\)"):
        dataset = load_mahnob(tmp_path)
    assert dataset["session"] == [2, 4, 6]
    assert dataset["video_path"][1] is None and dataset["video_path"][0].endswith("_C_Section_2.avi")
    first = dataset[0]
    assert (first["control"], first["predictability"], first["media_file"]) == (2.0, 9.0, "53.avi")
    assert first["cut_length_s"] == pytest.approx(136.5244) and first["video_rate"] == pytest.approx(60.9708)
    assert np.isnan(dataset[2]["control"]) and dataset[2]["media_file"] is None
    with pytest.warns(UserWarning, match="dropped"):
        assert load_mahnob(tmp_path, require_video=True)["session"] == [2, 6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = load_mahnob(tmp_path, labels_only=True)
    assert labels["session"] == [2, 4, 6] and labels["video_path"] == [None] * 3
    (sessions / "6" / "session.xml").write_text(_session_xml(6, extra='feltCtrl="12"'))
    with pytest.raises(FormatError, match="feltCtrl rating 12"):
        load_mahnob(tmp_path, labels_only=True)


def test_deap_matlab_release_is_read_with_loadmat(tmp_path):
    from scipy.io import savemat

    from facet_vlm.data.deap import DEAP_CHANNELS, load_deap, load_deap_subject

    rng = np.random.default_rng(0)
    data, labels = rng.normal(size=(40, len(DEAP_CHANNELS), 64)), rng.uniform(1, 9, (40, 4))
    folder = tmp_path / "data_preprocessed_matlab"
    folder.mkdir()
    savemat(folder / "s01.mat", {"data": data, "labels": labels})
    subject = load_deap_subject(folder / "s01.mat")
    np.testing.assert_allclose(subject["data"], data.astype(np.float32))
    np.testing.assert_allclose(subject["labels"], labels.astype(np.float32))
    (tmp_path / "metadata_csv").mkdir()
    (tmp_path / "metadata_csv" / "participant_ratings.csv").write_text(
        "Participant_id,Trial,Experiment_id,Valence,Arousal,Dominance,Liking\n1,1,5,7,2,5,5\n")
    row = load_deap(tmp_path, require_video=False)[0]
    assert row["dat_path"].endswith("s01.mat") and row["dat_index"] == 4
    savemat(folder / "s02.mat", {"data": data[:, :3], "labels": labels})
    with pytest.raises(FormatError, match="s02.mat"):
        load_deap_subject(folder / "s02.mat")
    hdf5 = folder / "s03.mat"
    hdf5.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 00:00:00 2024 HDF5 schema 1.00 ."
                     .ljust(128, b" ") + bytes(64))
    with pytest.raises(FormatError, match="MATLAB 7.3"):
        load_deap_subject(hdf5)
