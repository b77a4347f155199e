"""Colour-based face box and skin pixels: the fallback of the landmark face tracker, and face crops.

The rPPG path finds the face with a real detector and takes the skin from its landmarks
(:mod:`facet_vlm.physio.face_tracking`). This module is its fallback, used (and reported) when no detector is
available or it finds no face: OpenCV's bundled Haar cascade when this OpenCV build ships one
(``cv2.CascadeClassifier`` and ``haarcascade_frontalface_default.xml`` under ``cv2.data.haarcascades``; OpenCV 5
wheels ship neither), else a YCrCb skin mask (Chai & Ngan, 1999: Cr in [133, 173], Cb in [77, 127]) whose largest
connected component gives the face box. Colour alone counts blond and brown hair as skin, which is why it is only
the fallback. Nothing is downloaded.

Frames are RGB ``uint8`` arrays ``(T, H, W, 3)``; OpenCV's BGR order is converted at the file boundary only.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: YCrCb skin bounds (Chai & Ngan, 1999), inclusive.
SKIN_CR = (133, 173)
SKIN_CB = (77, 127)
_CASCADE_FILE = "haarcascade_frontalface_default.xml"


def haar_cascade_path() -> Path | None:
    """The bundled frontal-face Haar cascade, or ``None`` when this OpenCV build has none."""
    if not hasattr(cv2, "CascadeClassifier"):
        return None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None
    path = Path(folder) / _CASCADE_FILE
    return path if path.is_file() else None


def skin_mask(frame: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` mask of skin-coloured pixels of an RGB ``uint8`` frame (YCrCb thresholds + opening)."""
    ycrcb = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    mask = (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)


def detect_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """Face box ``(x, y, w, h)`` in an RGB frame: Haar cascade if bundled, else the largest skin blob."""
    cascade_path = haar_cascade_path()
    if cascade_path is not None:
        cascade = cv2.CascadeClassifier(str(cascade_path))
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4)
        if len(boxes):
            x, y, w, h = max(boxes, key=lambda box: box[2] * box[3])
            return int(x), int(y), int(w), int(h)
    mask = skin_mask(frame).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return x, y, w, h


def face_box(frames: np.ndarray, sample_every: int = 15) -> tuple[int, int, int, int]:
    """One face box for a whole clip: the median of per-frame detections every ``sample_every`` frames.

    A fixed box keeps the pixel set stable over time (box jitter would add noise to the pulse trace); the skin mask
    inside it still follows small motions. Falls back to the whole frame when nothing is found.
    """
    frames = np.asarray(frames)
    boxes = [box for box in (detect_face(frame) for frame in frames[::max(1, sample_every)]) if box is not None]
    if not boxes:
        return 0, 0, int(frames.shape[2]), int(frames.shape[1])
    x, y, w, h = (int(v) for v in np.median(np.asarray(boxes), axis=0))
    return x, y, w, h


def mean_skin_rgb(frames: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Per-frame mean RGB of the skin pixels inside the face box: float64 ``(T, 3)`` in 0..255.

    A frame with no skin pixel in the box uses all box pixels, so the trace never has gaps.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    x, y, w, h = box if box is not None else face_box(frames)
    trace = np.empty((len(frames), 3))
    for t, frame in enumerate(frames):
        crop = frame[y:y + h, x:x + w]
        mask = skin_mask(crop)
        pixels = crop[mask] if mask.any() else crop.reshape(-1, 3)
        trace[t] = pixels.reshape(-1, 3).mean(axis=0)
    return trace


def crop_face(frames: np.ndarray, box: tuple[int, int, int, int] | None = None, margin: float = 0.15,
              size: int | None = None) -> np.ndarray:
    """Square crops around the face box (enlarged by ``margin``), optionally resized to ``size`` x ``size``."""
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    x, y, w, h = box if box is not None else face_box(frames)
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0 = int(np.clip(round(cx - side / 2), 0, max(0, width - side)))
    y0 = int(np.clip(round(cy - side / 2), 0, max(0, height - side)))
    crops = frames[:, y0:y0 + side, x0:x0 + side]
    if size is not None:
        crops = np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA) for frame in crops])
    return crops
