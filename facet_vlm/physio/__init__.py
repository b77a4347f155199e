"""Pulse from face video (rPPG) and its time-frequency maps, and the glue to the physio-facial prompt model.

``measure_pulse(path)`` is the entry point for a heart rate: it streams the video, tracks the face with a real
detector, and returns the heart rate, the heart rate over time, an SNR and a low-confidence flag
(:class:`PulseResult`).
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from typing import Any

import numpy as np

from .face_region import crop_face, detect_face, face_box, haar_cascade_path, mean_skin_rgb, skin_mask
from .face_tracking import FaceLandmarks, FaceTracker, FaceTrackReport, MTCNNDetector, SkinRegions
from .postprocess import (
    PULSE_BAND,
    WindowedHeartRate,
    postprocess_pulse,
    smoothness_detrend,
    spectral_heart_rate,
    windowed_heart_rate,
)
from .pulse import (
    MODEL_DETECT_EVERY_S,
    NoFaceError,
    PulseConfig,
    PulseResult,
    analyze_face_video,
    measure_pulse,
    pulse_from_trace,
    video_heart_rate,
)
from .rppg import HR_BAND, bandpass, chrom, ecg_heart_rate, heart_rate, pos, rgb_trace
from .tfr import person_relative_maps, tfr, tfr_frequencies
from .video import VideoInfo, VideoStream, iter_video_frames, probe_video, read_video, write_video


def physio_analysis(video: str | PathLike | np.ndarray | Iterable[np.ndarray], fps: float | None = None,
                    num_frames: int = 8, image_size: int = 224, tfr_size: tuple[int, int] = (64, 64),
                    tfr_method: str = "stft", rppg_method: str = "pos", face_detector: str = "auto",
                    detect_every_s: float = MODEL_DETECT_EVERY_S) -> tuple[dict[str, np.ndarray], PulseResult]:
    """Model inputs of one face video and its measured pulse, in one streaming pass (:func:`analyze_face_video`).

    The face is tracked over the clip; the pulse uses every frame, the ViT sees ``num_frames`` crops around the
    tracked face sampled uniformly over the clip; the time-frequency map is built from the rPPG waveform.

    The defaults are the physio model's input settings (POS, a face detection every 0.2 s: fast enough to prepare
    training sets); :func:`measure_pulse` alone defaults to CHROM with a detection on every frame, the more
    accurate heart rate on the real development clips (``docs/rppg.md``).

    Returns:
        ``{"pixel_values": float32 (num_frames, 3, image_size, image_size) in [0, 1],
        "tfr_values": float32 (1, F, T')}`` — add a batch axis for the model — and the :class:`PulseResult`.
    """
    config = PulseConfig(method=rppg_method, detector=face_detector, detect_every_s=detect_every_s)
    result, crops = analyze_face_video(video, fps, config, num_crops=num_frames, crop_size=image_size)
    pixel_values = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    inputs = {"pixel_values": pixel_values,
              "tfr_values": tfr(result.waveform, result.fps, method=tfr_method, size=tfr_size)[None]}
    return inputs, result


def physio_inputs(video: str | PathLike | np.ndarray | Iterable[np.ndarray], fps: float | None = None,
                  num_frames: int = 8, image_size: int = 224, tfr_size: tuple[int, int] = (64, 64),
                  tfr_method: str = "stft", rppg_method: str = "pos", face_detector: str = "auto",
                  detect_every_s: float = MODEL_DETECT_EVERY_S) -> dict[str, np.ndarray]:
    """The model inputs of :func:`physio_analysis` alone."""
    return physio_analysis(video, fps, num_frames, image_size, tfr_size, tfr_method, rppg_method, face_detector,
                           detect_every_s)[0]


def lora_config(model: Any, **overrides: Any) -> Any:
    """The ``peft.LoraConfig`` that trains and saves exactly the physio-prompt model's trainable parts.

    See ``PhysioPromptForEmotionRecognition.peft_config_kwargs`` for the design; ``overrides`` replace fields.
    """
    from peft import LoraConfig

    return LoraConfig(**{**model.peft_config_kwargs(), **overrides})


__all__ = [
    "MODEL_DETECT_EVERY_S",
    "HR_BAND",
    "PULSE_BAND",
    "FaceLandmarks",
    "FaceTrackReport",
    "FaceTracker",
    "MTCNNDetector",
    "NoFaceError",
    "PulseConfig",
    "PulseResult",
    "SkinRegions",
    "VideoInfo",
    "VideoStream",
    "WindowedHeartRate",
    "analyze_face_video",
    "bandpass",
    "chrom",
    "crop_face",
    "detect_face",
    "ecg_heart_rate",
    "face_box",
    "haar_cascade_path",
    "heart_rate",
    "iter_video_frames",
    "lora_config",
    "mean_skin_rgb",
    "measure_pulse",
    "physio_analysis",
    "physio_inputs",
    "person_relative_maps",
    "pos",
    "postprocess_pulse",
    "probe_video",
    "pulse_from_trace",
    "read_video",
    "rgb_trace",
    "skin_mask",
    "smoothness_detrend",
    "spectral_heart_rate",
    "tfr",
    "tfr_frequencies",
    "video_heart_rate",
    "windowed_heart_rate",
    "write_video",
]
