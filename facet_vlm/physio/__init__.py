"""Pulse from face video (rPPG) and its time-frequency maps, and the glue to the physio-facial prompt model."""

from __future__ import annotations

from typing import Any

import numpy as np

from .face_region import (
    crop_face,
    detect_face,
    face_box,
    haar_cascade_path,
    mean_skin_rgb,
    read_video,
    skin_mask,
    write_video,
)
from .rppg import HR_BAND, bandpass, chrom, ecg_heart_rate, heart_rate, pos, rgb_trace, video_heart_rate
from .tfr import tfr, tfr_frequencies


def physio_inputs(frames: np.ndarray, fps: float, num_frames: int = 8, image_size: int = 224,
                  tfr_size: tuple[int, int] = (64, 64), tfr_method: str = "stft", rppg_method: str = "pos",
                  ) -> dict[str, np.ndarray]:
    """Model inputs of one face video: sampled face crops and the TFR of its rPPG pulse.

    The face box is found once for the clip; the pulse uses every frame (the spectrum needs them all), the ViT sees
    ``num_frames`` crops sampled uniformly over the clip.

    Returns:
        ``{"pixel_values": float32 (num_frames, 3, image_size, image_size) in [0, 1],
        "tfr_values": float32 (1, F, T')}`` — add a batch axis for the model.
    """
    frames = np.asarray(frames)
    box = face_box(frames)
    trace = mean_skin_rgb(frames, box)
    waveform = pos(trace, fps) if rppg_method == "pos" else chrom(trace, fps)
    index = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    crops = crop_face(frames[index], box, size=image_size)
    pixel_values = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return {"pixel_values": pixel_values,
            "tfr_values": tfr(waveform, fps, method=tfr_method, size=tfr_size)[None]}


def lora_config(model: Any, **overrides: Any) -> Any:
    """The ``peft.LoraConfig`` that trains and saves exactly the physio-prompt model's trainable parts.

    See ``PhysioPromptForEmotionRecognition.peft_config_kwargs`` for the design; ``overrides`` replace fields.
    """
    from peft import LoraConfig

    return LoraConfig(**{**model.peft_config_kwargs(), **overrides})


__all__ = [
    "HR_BAND",
    "bandpass",
    "chrom",
    "crop_face",
    "detect_face",
    "ecg_heart_rate",
    "face_box",
    "haar_cascade_path",
    "heart_rate",
    "lora_config",
    "mean_skin_rgb",
    "physio_inputs",
    "pos",
    "read_video",
    "rgb_trace",
    "skin_mask",
    "tfr",
    "tfr_frequencies",
    "video_heart_rate",
    "write_video",
]
