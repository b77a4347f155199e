"""Face videos made from one real photograph with a known pulse added to the skin of its face.

A real face (e.g. ``skimage.data.astronaut()``) lets the real face detector run on real facial texture, which the
drawn faces of :mod:`facet_vlm.data.synthetic_video` do not have. Every frame is the photograph, shifted by a slow
sub-pixel head motion, with a blood-volume pulse added to the face's skin pixels (inside the given face ellipse,
skin-coloured by the YCrCb bounds of :func:`facet_vlm.physio.face_region.skin_mask`) along the pulsatile colour
signature (:data:`facet_vlm.data.synthetic_video.PBV_SIGNATURE`), a distractor oscillation at another frequency
added to everything outside the face (a region taken from colour alone or from a loose box picks it up), and
sensor noise. Frames are generated one at a time, so a clip of any length can be written in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike

import cv2
import numpy as np

from ..physio.face_region import skin_mask
from ..physio.video import VideoWriter
from .synthetic_video import PBV_SIGNATURE

#: The astronaut's face in ``skimage.data.astronaut()`` (512 x 512) as an ellipse ``(cx, cy, half-width,
#: half-height)`` in pixels, placed by eye on the photograph (brows to chin, cheek to cheek).
ASTRONAUT_FACE = (224.0, 120.0, 40.0, 52.0)


@dataclass(frozen=True)
class PhotoPulseSettings:
    """How a photograph becomes a pulsing face clip.

    Attributes:
        fps: frame rate.
        heart_rate: the pulse in bpm (constant).
        amplitude: pulse amplitude as a fraction of the skin's intensity (real rPPG: about 0.2-1 %).
        distractor_hz: frequency of the oscillation added outside the face (0: none).
        distractor_amplitude: its amplitude as a fraction of the intensity.
        motion_px: amplitude of the slow head motion (pixels; a 0.15 Hz circle).
        noise: standard deviation of the added sensor noise (grey levels).
        size: ``(width, height)`` of the output frames; the photo is scaled to fit and centred on grey.
    """

    fps: float = 30.0
    heart_rate: float = 72.0
    amplitude: float = 0.006
    distractor_hz: float = 0.9
    distractor_amplitude: float = 0.01
    motion_px: float = 2.0
    noise: float = 1.0
    size: tuple[int, int] | None = None


def _layout(photo: np.ndarray, face: tuple[float, float, float, float], size: tuple[int, int] | None):
    """The photo placed on the output canvas, and the face ellipse mapped onto it."""
    if size is None:
        return photo.astype(np.float32), face
    width, height = size
    scale = min(width / photo.shape[1], height / photo.shape[0])
    resized = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 110.0, np.float32)
    x0, y0 = (width - resized.shape[1]) // 2, (height - resized.shape[0]) // 2
    canvas[y0:y0 + resized.shape[0], x0:x0 + resized.shape[1]] = resized
    cx, cy, ax, ay = face
    return canvas, (x0 + cx * scale, y0 + cy * scale, ax * scale, ay * scale)


def photo_pulse_frames(photo: np.ndarray, seconds: float, settings: PhotoPulseSettings | None = None,
                       face: tuple[float, float, float, float] = ASTRONAUT_FACE, seed: int = 0
                       ) -> Iterator[np.ndarray]:
    """RGB ``uint8`` frames of a clip of ``seconds`` made from ``photo`` (see the module docstring).

    Args:
        photo: an RGB ``uint8`` face photograph.
        seconds: clip length.
        settings: the clip's settings.
        face: the face ellipse ``(cx, cy, half-width, half-height)`` in photo pixels.
        seed: seed of the noise (OpenCV's random generator, ``cv2.setRNGSeed``).
    """
    settings = settings or PhotoPulseSettings()
    canvas, (cx, cy, ax, ay) = _layout(np.asarray(photo), face, settings.size)
    height, width = canvas.shape[:2]
    ellipse = np.zeros((height, width), np.uint8)
    cv2.ellipse(ellipse, (round(cx), round(cy)), (round(ax), round(ay)), 0, 0, 360, 1, -1)
    face_skin = (ellipse.astype(bool) & skin_mask(canvas.astype(np.uint8)))[..., None].astype(np.float32)
    outside = 1.0 - cv2.dilate(ellipse, np.ones((15, 15), np.uint8))[..., None].astype(np.float32)
    signature = (PBV_SIGNATURE / np.linalg.norm(PBV_SIGNATURE)).astype(np.float32)
    # More blood absorbs more light: the skin darkens along the pulsatile signature.
    pulse_part = canvas * face_skin * signature * np.float32(settings.amplitude)
    distractor_part = canvas * outside * np.float32(settings.distractor_amplitude)
    cv2.setRNGSeed(seed)
    noise = np.empty_like(canvas)
    frequency = settings.heart_rate / 60.0
    for index in range(int(round(seconds * settings.fps))):
        t = index / settings.fps
        pulse = np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t - 0.8)
        distractor = np.sin(2 * np.pi * settings.distractor_hz * t)
        frame = cv2.scaleAdd(pulse_part, -float(pulse), canvas)
        frame = cv2.scaleAdd(distractor_part, float(distractor), frame)
        cv2.randn(noise, 0.0, settings.noise)
        frame = np.clip(np.round(frame + noise), 0, 255).astype(np.uint8)
        shift = settings.motion_px * np.array([np.cos(2 * np.pi * 0.15 * t), np.sin(2 * np.pi * 0.15 * t)])
        yield cv2.warpAffine(frame, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (width, height),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_photo_pulse_video(path: str | PathLike, photo: np.ndarray, seconds: float,
                            settings: PhotoPulseSettings | None = None,
                            face: tuple[float, float, float, float] = ASTRONAUT_FACE, seed: int = 0,
                            codecs: tuple[str, ...] = ("FFV1", "MJPG")) -> str:
    """Write :func:`photo_pulse_frames` to an ``.avi`` one frame at a time; returns the FourCC used."""
    settings = settings or PhotoPulseSettings()
    frames = photo_pulse_frames(photo, seconds, settings, face, seed)
    first = next(frames)
    with VideoWriter(path, settings.fps, (first.shape[1], first.shape[0]), codecs) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return writer.codec
