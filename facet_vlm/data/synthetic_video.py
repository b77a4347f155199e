"""Synthetic face videos with a pulse: the embedded stand-in for MAHNOB-HCI / DEAP.

Each clip is a drawn face (skin ellipse, eyes, brows, mouth) with an expression (mouth curvature and opening, brow
height and frown, eye opening, head-motion energy, blink rate) and a skin colour that carries a blood-volume pulse
(the PBV colour signature, strongest in green) at a known heart rate with heart-rate variability (a 0.1 Hz Mayer
wave and 0.25 Hz respiratory sinus arrhythmia). Which of the two carries the trial's emotion is the ``carrier``:

* ``"both"`` — the expression follows the trial's valence and arousal, and the pulse follows its arousal;
* ``"face"`` — the expression follows valence and arousal; the pulse stays at the subject's resting heart rate and
  variability whatever the trial (it carries nothing);
* ``"pulse"`` — the expression follows a valence/arousal quadrant drawn independently of the trial's ratings (it
  carries nothing); the pulse follows the arousal.

The pulse follows arousal on each subject's own baseline: the mean heart rate is ``base_hr + hr_per_arousal *
(arousal - 5)`` and the variability (amplitude of both oscillations) is ``base_hrv * (1 - hrv_per_arousal * (arousal -
5) / 4)``: arousal up, heart rate up, variability down. Valence does not reach the pulse. Subjects differ in skin tone,
face geometry, background, lighting level and gradient, baseline heart rate and variability and their arousal slopes,
pulse amplitude, expressiveness (how much of v/a shows) and a resting expression bias, so a model that memorises
subjects does badly on unseen ones. Clips get slow lighting drift and sensor noise.

With ``out_dir`` the clips are written in the MAHNOB-HCI layout, which
:func:`facet_vlm.data.mahnob.load_mahnob` reads back::

    out_dir/Sessions/<n>/session.xml
    out_dir/Sessions/<n>/P<subject>-Rec1-2009.07.09.17.53.46_C1 trigger _C1.avi   (lossless FFV1 if available)
    out_dir/Sessions/<n>/Part_<subject>_S_Trial<k>_emotion.bdf                    (EXG1..EXG3 ECG, Status)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError
from ..io.bdf import write_bdf
from ..physio.video import write_video

#: Sample rate of the written ECG channels (MAHNOB-HCI records at 256 Hz).
ECG_RATE = 256.0
#: Pulsatile colour signature (relative R, G, B absorption change; de Haan & van Leest 2014).
PBV_SIGNATURE = np.array([0.33, 0.77, 0.53])
#: MAHNOB-HCI feltEmo codes used for each (valence high, arousal high) quadrant.
QUADRANT_EMOTIONS = {(1, 1): (4, 11), (1, 0): (0, 4), (0, 1): (1, 3), (0, 0): (5, 0)}
#: What carries the trial's emotion (see the module docstring).
CARRIERS = ("both", "face", "pulse")
_LIGHT_SKIN, _DARK_SKIN = np.array([236.0, 192.0, 162.0]), np.array([125.0, 80.0, 50.0])


@dataclass
class SyntheticVideo:
    """One synthetic clip and its ground truth.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB frames.
        fps: frame rate.
        subject: subject id (``"1"``, ``"2"``...), as in MAHNOB-HCI.
        session: session number (folder name under ``Sessions/``).
        trial: trial number of the subject (1-based).
        valence, arousal: ratings on 1..9.
        emotion: MAHNOB-HCI ``feltEmo`` code.
        hr_bpm: mean heart rate over the clip.
        hr_curve: instantaneous heart rate per frame (bpm).
        pulse: the blood-volume pulse per frame (unit-free, what modulates the skin).
        ecg: ECG-like trace at :data:`ECG_RATE` (microvolts).
        carrier: what carries the emotion (``"both"``, ``"face"`` or ``"pulse"``).
        expression: the (valence, arousal) expression strengths in [-1, 1] the face shows.
        hrv: the heart-rate variability scale of the clip (1 = the generator's nominal oscillations).
        session_dir: the written session folder, if written.
    """

    frames: np.ndarray
    fps: float
    subject: str
    session: int
    trial: int
    valence: int
    arousal: int
    emotion: int
    hr_bpm: float
    hr_curve: np.ndarray
    pulse: np.ndarray
    ecg: np.ndarray
    carrier: str = "both"
    expression: tuple[float, float] = (0.0, 0.0)
    hrv: float = 1.0
    session_dir: Path | None = None


def _subject_traits(rng: np.random.Generator, size: int) -> dict:
    tone = rng.uniform(0, 1)
    return {
        "skin": (1 - tone) * _LIGHT_SKIN + tone * _DARK_SKIN + rng.normal(0, 4, 3),
        "background": rng.uniform([40, 60, 90], [110, 130, 170]),
        "face_w": rng.uniform(0.26, 0.32) * size,
        "face_h": rng.uniform(0.36, 0.42) * size,
        "eye_gap": rng.uniform(0.20, 0.26),
        "eye_y": rng.uniform(-0.20, -0.12),
        "mouth_y": rng.uniform(0.42, 0.52),
        "mouth_w": rng.uniform(0.38, 0.50),
        "light_gain": rng.uniform(0.8, 1.15),
        "light_gradient": rng.uniform(-0.25, 0.25, 2),
        "base_hr": rng.uniform(60.0, 80.0),
        "hr_per_arousal": rng.uniform(3.0, 4.0),
        "pulse_amp": rng.uniform(0.006, 0.012),
        "expressiveness": rng.uniform(0.5, 1.2),
        "mouth_bias": rng.uniform(-0.3, 0.3),
        "motion": rng.uniform(0.5, 1.5),
        "base_hrv": rng.uniform(0.8, 1.2),
        "hrv_per_arousal": rng.uniform(0.4, 0.6),
    }


def _ratings(rng: np.random.Generator, quadrant: tuple[int, int]) -> tuple[int, int]:
    high, low = (6, 10), (1, 5)
    valence = int(rng.integers(*(high if quadrant[0] else low)))
    arousal = int(rng.integers(*(high if quadrant[1] else low)))
    return valence, arousal


def _pulse(rng: np.random.Generator, mean_hr: float, fps: float, n: int, ecg_n: int, hrv: float = 1.0):
    """Instantaneous HR at frame and ECG times, the PPG-like pulse per frame, and the ECG trace.

    ``hrv`` scales the heart-rate variability (Mayer wave of 2.5 bpm and respiratory arrhythmia of 1.5 bpm at 1).
    """
    phases = rng.uniform(0, 2 * np.pi, 3)

    def instantaneous(t: np.ndarray) -> np.ndarray:
        return (mean_hr + hrv * 2.5 * np.sin(2 * np.pi * 0.1 * t + phases[0])
                + hrv * 1.5 * np.sin(2 * np.pi * 0.25 * t + phases[1]))

    t_ecg = np.arange(ecg_n) / ECG_RATE
    hr_ecg = instantaneous(t_ecg)
    phase_ecg = phases[2] + 2 * np.pi * np.cumsum(hr_ecg / 60.0) / ECG_RATE
    t_frame = np.arange(n) / fps
    hr_frame = instantaneous(t_frame)
    phase_frame = np.interp(t_frame, t_ecg, phase_ecg)
    # Systolic upstroke plus a dicrotic second harmonic; blood volume up = skin darker (see below).
    pulse = np.sin(phase_frame) + 0.35 * np.sin(2 * phase_frame - 0.8)
    beats = t_ecg[np.flatnonzero(np.diff(np.floor(phase_ecg / (2 * np.pi))) > 0) + 1]
    ecg = np.zeros(ecg_n)
    for offset, amplitude, width in ((-0.2, 150, 0.025), (-0.03, -100, 0.01), (0.0, 1000, 0.012),
                                     (0.03, -250, 0.01), (0.25, 300, 0.04)):
        for beat in beats:
            ecg += amplitude * np.exp(-((t_ecg - beat - offset) ** 2) / (2 * width**2))
    ecg += 80 * np.sin(2 * np.pi * 0.3 * t_ecg + phases[0]) + rng.normal(0, 15, ecg_n)
    return hr_frame, pulse, ecg, float(np.mean(instantaneous(t_ecg)))


def _draw_frame(traits: dict, size: int, v: float, a: float, skin_rgb: np.ndarray, offset: np.ndarray,
                eye_open: float, lighting: np.ndarray) -> np.ndarray:
    """One float RGB frame; ``v`` and ``a`` are expression strengths in [-1, 1]."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = traits["background"]
    cx, cy = size / 2 + offset[0], size / 2 + offset[1]
    fw, fh = traits["face_w"], traits["face_h"]
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (round(cx), round(cy)), (round(fw), round(fh)), 0, 0, 360, 1, -1)
    image[mask.astype(bool)] = skin_rgb
    dark = (40.0, 30.0, 30.0)
    for side in (-1, 1):
        ex, ey = cx + side * traits["eye_gap"] * 2 * fw, cy + traits["eye_y"] * fh
        eye_h = max(0.5, fh * 0.07 * (0.8 + 0.4 * a) * eye_open)
        cv2.ellipse(image, (round(ex), round(ey)), (max(1, round(fw * 0.16)), round(eye_h)), 0, 0, 360,
                    (235.0, 235.0, 235.0), -1)
        if eye_open > 0.3:
            cv2.circle(image, (round(ex), round(ey)), max(1, round(fw * 0.06)), dark, -1)
        # Brows: raised by arousal, inner ends lowered (frown) by negative valence.
        brow_y = ey - fh * (0.16 + 0.07 * a)
        inner = (ex - side * fw * 0.18, brow_y + fh * 0.06 * max(0.0, -v))
        outer = (ex + side * fw * 0.18, brow_y)
        cv2.line(image, (round(inner[0]), round(inner[1])), (round(outer[0]), round(outer[1])), dark,
                 max(1, round(size / 48)))
    # Mouth: corners up for positive valence, opening with arousal.
    mouth_y = cy + traits["mouth_y"] * fh
    half = traits["mouth_w"] * fw
    xs = np.linspace(-half, half, 15)
    curve = -v * fh * 0.12 * (xs / half) ** 2
    upper = np.stack([cx + xs, mouth_y + curve], axis=1)
    opening = fh * 0.08 * max(0.0, a) * (1 - (xs / half) ** 2)
    lower = np.stack([cx + xs, mouth_y + curve + opening], axis=1)[::-1]
    polygon = np.round(np.concatenate([upper, lower])).astype(np.int32)
    cv2.fillPoly(image, [polygon], (110.0, 40.0, 45.0))
    cv2.polylines(image, [np.round(upper).astype(np.int32)], False, (90.0, 30.0, 35.0), 1)
    return image * lighting


def generate_videos(out_dir: str | PathLike | None = None, subjects: int = 8, trials_per_subject: int = 8,
                    fps: float = 30.0, seconds: float = 8.0, size: int = 64, seed: int = 0,
                    noise_std: float = 1.5, carrier: str = "both") -> list[SyntheticVideo]:
    """Generate synthetic face-and-pulse clips (and write them in the MAHNOB-HCI layout when ``out_dir`` is given).

    Trials of a subject cycle through the four valence/arousal quadrants, so every subject has both classes of
    both targets. Ratings are integers on 1..9, never 5 (unambiguous at the threshold 5).

    Args:
        out_dir: root to write ``Sessions/<n>/...`` under; ``None`` keeps everything in memory only.
        subjects: number of subjects.
        trials_per_subject: clips per subject.
        fps: frame rate; seconds: clip length; size: frame side in pixels.
        seed: makes the whole set reproducible.
        noise_std: per-pixel sensor noise (grey levels).
        carrier: what carries the trial's emotion: ``"both"`` (face and pulse), ``"face"`` or ``"pulse"`` (see the
            module docstring); the ratings, labels and files are the same in all three.
    """
    if carrier not in CARRIERS:
        raise ConfigError(f"carrier must be one of {CARRIERS}, got {carrier!r}")
    rng = np.random.default_rng(seed)
    n_frames = int(round(fps * seconds))
    ecg_n = int(round(ECG_RATE * seconds))
    quadrants = [(1, 1), (0, 0), (1, 0), (0, 1)]
    videos = []
    session = 0
    for s in range(subjects):
        traits = _subject_traits(rng, size)
        subject = str(s + 1)
        for k in range(trials_per_subject):
            session += 1
            quadrant = quadrants[(k + s) % 4]
            valence, arousal = _ratings(rng, quadrant)
            emotion = int(rng.choice(QUADRANT_EMOTIONS[quadrant]))
            shown_v, shown_a = valence, arousal
            if carrier == "pulse":  # the face shows a quadrant unrelated to the trial's ratings
                shown_v, shown_a = _ratings(rng, quadrants[int(rng.integers(4))])
            felt_a = 5 if carrier == "face" else arousal  # "face": the pulse stays at the subject's baseline
            gain = traits["expressiveness"]
            v = float(np.clip(gain * (shown_v - 5) / 4 + traits["mouth_bias"], -1, 1))
            a = float(np.clip(gain * (shown_a - 5) / 4, -1, 1))
            mean_hr = float(np.clip(traits["base_hr"] + traits["hr_per_arousal"] * (felt_a - 5), 45, 130))
            hrv = traits["base_hrv"] * (1 - traits["hrv_per_arousal"] * (felt_a - 5) / 4)
            hr_curve, pulse, ecg, hr_true = _pulse(rng, mean_hr, fps, n_frames, ecg_n, hrv)
            t = np.arange(n_frames) / fps
            # Head motion: smooth random walk whose energy grows with arousal.
            steps = rng.normal(0, 0.35 * traits["motion"] * (1.2 + a), (n_frames, 2))
            motion = np.cumsum(steps, axis=0)
            motion -= np.linspace(0, 1, n_frames)[:, None] * motion[-1]
            motion = np.clip(motion, -size * 0.08, size * 0.08)
            blink_rate = 0.2 + 0.25 * (a + 1)
            blinks = rng.uniform(0, seconds, rng.poisson(blink_rate * seconds))
            yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
            spatial = 1 + traits["light_gradient"][0] * xx + traits["light_gradient"][1] * yy
            drift_phase = rng.uniform(0, 2 * np.pi)
            frames = np.empty((n_frames, size, size, 3), np.uint8)
            for i in range(n_frames):
                drift = 1 + 0.06 * np.sin(2 * np.pi * 0.05 * t[i] + drift_phase)
                lighting = (traits["light_gain"] * drift * spatial)[..., None].astype(np.float32)
                skin = traits["skin"] * (1 - traits["pulse_amp"] * pulse[i] * PBV_SIGNATURE / PBV_SIGNATURE.max())
                eye_open = 0.1 if np.any(np.abs(blinks - t[i]) < 0.07) else 1.0
                image = _draw_frame(traits, size, v, a, skin, motion[i], eye_open, lighting)
                image += rng.normal(0, noise_std, image.shape).astype(np.float32)
                frames[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
            video = SyntheticVideo(frames=frames, fps=float(fps), subject=subject, session=session, trial=k + 1,
                                   valence=valence, arousal=arousal, emotion=emotion, hr_bpm=hr_true,
                                   hr_curve=hr_curve, pulse=pulse, ecg=ecg, carrier=carrier, expression=(v, a),
                                   hrv=float(hrv))
            if out_dir is not None:
                video.session_dir = _write_session(Path(out_dir), video)
            videos.append(video)
    return videos


def _write_session(root: Path, video: SyntheticVideo) -> Path:
    folder = root / "Sessions" / str(video.session)
    folder.mkdir(parents=True, exist_ok=True)
    video_name = f"P{video.subject}-Rec1-2009.07.09.17.53.46_C1 trigger _C1.avi"
    bdf_name = f"Part_{video.subject}_S_Trial{video.trial}_emotion.bdf"
    write_video(folder / video_name, video.frames, video.fps)
    status = np.zeros_like(video.ecg)
    write_bdf(folder / bdf_name, {"EXG1": video.ecg, "EXG2": -0.8 * video.ecg, "EXG3": 0.6 * video.ecg,
                                  "Status": status},
              sample_rates=ECG_RATE, physical_dimensions=["uV", "uV", "uV", "Boolean"],
              patient=f"X X X Part_{video.subject}", recording="Startdate X X X BioSemi")
    session = ET.Element("session", {
        "sessionId": str(video.session), "isStim": "1", "cutNr": str(video.trial),
        "mediaFile": f"synthetic_{video.trial}.avi", "vidRate": f"{video.fps:g}",
        "feltEmo": str(video.emotion), "feltArsl": str(video.arousal), "feltVlnc": str(video.valence),
        "feltCtrl": "5", "feltPred": "5",
    })
    ET.SubElement(session, "subject", {"id": video.subject})
    ET.SubElement(session, "track", {"type": "Video", "id": "1", "filename": video_name, "color": "1"})
    ET.SubElement(session, "track", {"type": "Physiological", "id": "2", "filename": bdf_name})
    ET.indent(session)
    ET.ElementTree(session).write(folder / "session.xml", encoding="utf-8", xml_declaration=True)
    return folder
