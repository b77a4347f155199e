"""A face tracked over a clip by a real detector, and the skin region (forehead and cheeks) taken from its landmarks.

Detector: MTCNN (Zhang, Zhang, Li, Qiao, "Joint face detection and alignment using multitask cascaded
convolutional networks", IEEE SPL 2016) as packaged by ``facenet-pytorch`` (MIT licence), whose three small
networks (P-, R- and O-Net, 2 MB) ship inside the wheel: nothing is downloaded. It gives a face box and five
landmarks — the two eye centres, the nose tip and the two mouth corners — at about 30 ms per 640x480 frame on one
CPU thread. Why this one: MediaPipe's current wheels ship no model (its Tasks API downloads ``.task`` files) and
the last wheels that did require numpy < 2; dlib has no wheel (a C++ build) and its landmark model's training set
(iBUG 300-W) excludes commercial use; OpenCV 5 wheels ship no Haar cascade and ``cv2.FaceDetectorYN`` needs a
downloaded ONNX model; face-alignment, RetinaFace and InsightFace download their weights at run time.
``facenet-pytorch`` 2.6 pins torch < 2.3, so the dependency is ``>=2.5.3,<2.6`` (2.5.3 has no pins).

Tracking: the detector runs on every ``detect_every``-th frame (a keyframe); landmarks of the frames in between are
interpolated linearly between the two keyframes around them, which removes the frame-to-frame jitter of the
landmarks (box jitter moves the region's edge pixels in and out, which is noise in the pulse trace). Only the frames
between two keyframes are buffered. A keyframe without a face keeps the last face for up to ``hold_frames``
frames; after that (or before the first face) the frame has no face region.

Skin region (our design; papers that use landmark regions — e.g. Kwon et al. 2015, Li et al. 2014 — draw them on
68-point landmarks): in a face frame whose origin is the midpoint of the eyes, whose x axis runs from the left to
the right eye (the eyes sit at x = -0.5 and +0.5) and whose y axis runs from the eye midpoint to the mouth
midpoint (the mouth at y = 1), the forehead is x in [-0.45, 0.45], y in [-0.75, -0.3] (above the brows, below the
hairline of most adults) and each cheek is |x| in [0.3, 0.75], y in [0.3, 0.8] (below the lower eyelid, beside the
nose, above the mouth). The frame follows head roll, scale and foreshortening. Inside these polygons, pixels whose
colour is far from the face's own skin colour are dropped (:class:`SkinRegions`): hair over the forehead, brows,
glasses frames, shadows and highlights. The reference colour is measured on each keyframe from the region's own
pixels (robust median and spread), not from fixed skin-colour bounds.

Fallback (reported, never silent): without the ``facenet-pytorch`` package, or on frames where MTCNN finds no
face, the ``"auto"`` detector uses :class:`SkinColourDetector` — the largest YCrCb skin-coloured blob
(:func:`facet_vlm.physio.face_region.skin_mask`), with the skin mask inside its box as the region. Every frame's
source is counted in :class:`FaceTrackReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import ConfigError
from .face_region import detect_face, skin_mask

logger = logging.getLogger(__name__)

DETECTORS = ("auto", "mtcnn", "skin")
#: Where each kind of frame's region came from (see :class:`FaceTrackReport`).
SOURCES = ("detector", "held", "fallback", "none")


@dataclass(frozen=True)
class FaceLandmarks:
    """One face in one frame.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels (float).
        points: ``(5, 2)`` landmarks in pixels — the eye on the image's left, the eye on its right, the nose tip,
            the mouth corner on the left, the mouth corner on the right — or ``None`` (a box-only detector).
        score: the detector's confidence in [0, 1].
    """

    box: np.ndarray
    points: np.ndarray | None
    score: float

    def interpolate(self, other: FaceLandmarks, weight: float) -> FaceLandmarks:
        """The face ``weight`` of the way from this one to ``other`` (0: this one, 1: ``other``)."""
        points = None
        if self.points is not None and other.points is not None:
            points = (1 - weight) * self.points + weight * other.points
        return FaceLandmarks((1 - weight) * self.box + weight * other.box, points,
                             float((1 - weight) * self.score + weight * other.score))


class MTCNNDetector:
    """MTCNN face detection with five landmarks (``facenet-pytorch``; weights inside the package).

    Args:
        min_face_size: smallest face searched for, in pixels of the (possibly downscaled) frame.
        max_side: frames whose longer side exceeds this are downscaled for detection (faster; boxes and
            landmarks are scaled back). 640 keeps VGA video at full resolution.
        thresholds: the three stages' face-probability thresholds (facenet-pytorch's defaults).
        min_score: faces whose final probability is below this are ignored.

    Raises:
        ConfigError: ``facenet-pytorch`` is not installed.
    """

    name = "mtcnn"

    def __init__(self, min_face_size: int = 40, max_side: int = 640,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), min_score: float = 0.9):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as error:
            raise ConfigError("the MTCNN face detector needs the facenet-pytorch package: pip install "
                              "'facenet-pytorch>=2.5.3,<2.6' (or use detector='skin')") from error
        self.max_side, self.min_score, self.min_face_size = int(max_side), float(min_score), int(min_face_size)
        self._model = MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), select_largest=True,
                            keep_all=False, post_process=False, device="cpu")

    def detect(self, frame: np.ndarray) -> FaceLandmarks | None:
        """The largest face of an RGB ``uint8`` frame, or ``None``."""
        import torch

        scale = min(1.0, self.max_side / max(frame.shape[:2]))
        image = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(image.shape[:2]) < self.min_face_size:  # no face of the searched size fits (MTCNN would fail)
            return None
        with torch.inference_mode():
            boxes, probs, points = self._model.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None or len(boxes) == 0 or probs[0] is None or probs[0] < self.min_score:
            return None
        return FaceLandmarks(np.asarray(boxes[0], float) / scale, np.asarray(points[0], float) / scale,
                             float(probs[0]))


class SkinColourDetector:
    """The fallback: the bounding box of the largest skin-coloured blob (YCrCb bounds), without landmarks."""

    name = "skin"

    def detect(self, frame: np.ndarray) -> FaceLandmarks | None:
        box = detect_face(frame)
        if box is None:
            return None
        x, y, w, h = box
        return FaceLandmarks(np.array([x, y, x + w, y + h], float), None, 0.0)


def make_face_detector(name: str = "mtcnn", **kwargs) -> MTCNNDetector | SkinColourDetector:
    """``"mtcnn"`` (:class:`MTCNNDetector`, ``kwargs`` passed on) or ``"skin"`` (:class:`SkinColourDetector`)."""
    if name == "mtcnn":
        return MTCNNDetector(**kwargs)
    if name == "skin":
        return SkinColourDetector()
    raise ConfigError(f"face detector must be 'mtcnn' or 'skin', got {name!r}")


@dataclass(frozen=True)
class SkinRegions:
    """The forehead and cheek polygons in the landmark face frame, and the colour test inside them.

    Coordinates are in the face frame described in the module docstring (eyes at x = +-0.5, y = 0; mouth midpoint
    at x = 0, y = 1). Each region is ``(x_min, x_max, y_min, y_max)``; the cheeks mirror ``cheek``.

    Attributes:
        forehead: the forehead rectangle.
        cheek: the right-hand cheek rectangle (x > 0); the left one is its mirror image.
        colour_mads: pixels whose Cr or Cb differs from the keyframe's median by more than this many robust
            standard deviations (1.4826 x MAD), or whose luma differs by more than ``luma_mads`` of them, are not
            skin. ``None`` keeps every pixel of the polygons.
        luma_mads: the luma bound (looser than chroma: shading across the face is skin).
        min_pixels: a frame whose regions hold fewer pixels than this in all (a face far away) has no region.
        min_region_pixels: a region with fewer pixels than this gives no value for that frame (its trace value is
            interpolated from the neighbouring frames).
    """

    forehead: tuple[float, float, float, float] = (-0.45, 0.45, -0.75, -0.3)
    cheek: tuple[float, float, float, float] = (0.3, 0.75, 0.3, 0.8)
    colour_mads: float | None = 3.0
    luma_mads: float = 4.0
    min_pixels: int = 50
    min_region_pixels: int = 15

    def polygons(self, points: np.ndarray) -> list[np.ndarray]:
        """The three regions of a face as ``(4, 2)`` float pixel polygons (forehead, left cheek, right cheek)."""
        points = np.asarray(points, float)
        eye_mid = (points[0] + points[1]) / 2
        x_axis = points[1] - points[0]
        y_axis = (points[3] + points[4]) / 2 - eye_mid
        x0, x1, y0, y1 = self.cheek
        rectangles = [self.forehead, (-x1, -x0, y0, y1), self.cheek]
        return [np.array([eye_mid + x * x_axis + y * y_axis for x, y in ((a, c), (b, c), (b, d), (a, d))])
                for a, b, c, d in rectangles]


@dataclass
class ColourGate:
    """Per-keyframe skin colour bounds in YCrCb: ``low``/``high`` of (Y, Cr, Cb); all pixels pass when unset."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def fit(cls, ycrcb: np.ndarray, regions: SkinRegions) -> ColourGate:
        """Bounds from the region's own pixels ``(N, 3)`` (robust median +- MADs)."""
        if regions.colour_mads is None or len(ycrcb) < regions.min_pixels:
            return cls()
        median = np.median(ycrcb, axis=0)
        spread = 1.4826 * np.median(np.abs(ycrcb - median), axis=0) + 1.0
        width = spread * np.array([regions.luma_mads, regions.colour_mads, regions.colour_mads])
        return cls(median - width, median + width)

    def __call__(self, ycrcb: np.ndarray) -> np.ndarray:
        if self.low is None:
            return np.ones(ycrcb.shape[:-1], bool)
        return np.all((ycrcb >= self.low) & (ycrcb <= self.high), axis=-1)


@dataclass
class FaceTrackReport:
    """How every frame's skin region was found, for the caller to report.

    Attributes:
        detector: the detector asked for (``"auto"``, ``"mtcnn"`` or ``"skin"``).
        frames: frames seen.
        detector_frames: frames whose region came from the detector's landmarks (a keyframe detection or the
            interpolation between two).
        held_frames: frames after a keyframe without a face that kept the last face (at most ``hold_frames``).
        fallback_frames: frames whose region came from the skin-colour fallback.
        no_face_frames: frames with no region at all (their trace value is interpolated from the neighbours).
        fallback_reason: why the fallback was used, if it was.
    """

    detector: str
    frames: int = 0
    detector_frames: int = 0
    held_frames: int = 0
    fallback_frames: int = 0
    no_face_frames: int = 0
    fallback_reason: str | None = None

    def count(self, source: str) -> None:
        self.frames += 1
        name = {"detector": "detector_frames", "held": "held_frames", "fallback": "fallback_frames",
                "none": "no_face_frames"}[source]
        setattr(self, name, getattr(self, name) + 1)

    @property
    def face_fraction(self) -> float:
        """Share of frames with a region from the detector (or held from it)."""
        return (self.detector_frames + self.held_frames) / self.frames if self.frames else 0.0

    def summary(self) -> str:
        """One line: where the regions came from."""
        parts = [f"{self.detector_frames} of {self.frames} frames from the MTCNN face landmarks"]
        if self.detector == "skin":
            parts = [f"{self.frames} frames from the skin-colour region (detector='skin')"]
        if self.held_frames:
            parts.append(f"{self.held_frames} held from the last face")
        if self.fallback_frames and self.detector != "skin":
            parts.append(f"{self.fallback_frames} from the skin-colour fallback ({self.fallback_reason})")
        if self.no_face_frames:
            parts.append(f"{self.no_face_frames} without a face")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"detector": self.detector, "frames": self.frames, "detector_frames": self.detector_frames,
                "held_frames": self.held_frames, "fallback_frames": self.fallback_frames,
                "no_face_frames": self.no_face_frames, "fallback_reason": self.fallback_reason,
                "face_fraction": self.face_fraction}


@dataclass
class TrackedFrame:
    """One frame with its face: ``face`` (``None`` without one), where it came from, and its skin regions —
    boolean ``masks`` (forehead, left cheek, right cheek; one mask for the box-only fallback), each covering
    ``frame[y0:y1, x0:x1]`` for ``(x0, y0, x1, y1) = mask_box``, or ``None`` when the frame has no region."""

    frame: np.ndarray
    face: FaceLandmarks | None
    source: str
    masks: list[np.ndarray] | None = None
    mask_box: tuple[int, int, int, int] | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The union of the region masks."""
        return None if self.masks is None else np.logical_or.reduce(self.masks)

    def skin_pixels(self) -> np.ndarray:
        """All region pixels ``(N, 3)`` (empty without a region)."""
        if self.masks is None:
            return np.empty((0, 3), np.uint8)
        x0, y0, x1, y1 = self.mask_box
        return self.frame[y0:y1, x0:x1][self.mask]

    def region_means(self, regions: int, min_pixels: int) -> np.ndarray:
        """Mean RGB of each region ``(regions, 3)``: NaN for a region with fewer than ``min_pixels`` pixels; a
        single fallback region is repeated ``regions`` times."""
        means = np.full((regions, 3), np.nan)
        if self.masks is None:
            return means
        x0, y0, x1, y1 = self.mask_box
        crop = self.frame[y0:y1, x0:x1]
        values = [crop[mask].mean(axis=0) if mask.sum() >= min_pixels else np.full(3, np.nan) for mask in self.masks]
        means[:] = values if len(values) == regions else values[0]
        return means


def _polygon_masks(shape: tuple[int, int], polygons: list[np.ndarray]
                   ) -> tuple[list[np.ndarray], tuple[int, int, int, int]]:
    """One boolean mask per polygon, all over the same clipped bounding box ``(x0, y0, x1, y1)`` of the polygons."""
    height, width = shape
    corners = np.concatenate(polygons)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    masks = []
    for polygon in polygons:
        mask = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.uint8)
        if mask.size:
            cv2.fillPoly(mask, [np.round((polygon - (x0, y0)) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8,
                         shift=4)
        masks.append(mask.astype(bool))
    return masks, (x0, y0, x1, y1)


@dataclass
class FaceTracker:
    """Follow one face through a stream of frames and give each frame its skin region (module docstring).

    Args:
        detector: ``"auto"`` (MTCNN, with the reported skin-colour fallback when the package is missing or on
            frames without a detected face), ``"mtcnn"`` (frames without a face get no region), or ``"skin"``
            (the colour fallback only).
        detect_every: frames between two detections (1: every frame).
        hold_frames: frames a face is kept after a keyframe that found none.
        regions: the skin-region geometry and colour test.
        detector_factory: builds the MTCNN detector (default: ``MTCNNDetector()``); lets callers share one.
    """

    detector: str = "auto"
    detect_every: int = 6
    hold_frames: int = 30
    regions: SkinRegions = field(default_factory=SkinRegions)
    detector_factory: Callable[[], MTCNNDetector] | None = None

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ConfigError(f"face detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.detect_every < 1 or self.hold_frames < 0:
            raise ConfigError(f"detect_every={self.detect_every} must be >= 1 and hold_frames={self.hold_frames} "
                              ">= 0")
        self.report = FaceTrackReport(self.detector)
        self._primary = None
        self._fallback = SkinColourDetector() if self.detector in ("auto", "skin") else None
        if self.detector == "skin":
            self.report.fallback_reason = "detector='skin' asked for"
        else:
            try:
                self._primary = (self.detector_factory or MTCNNDetector)()
            except ConfigError as error:
                if self.detector == "mtcnn":
                    raise
                self.report.fallback_reason = "facenet-pytorch is not installed"
                logger.warning("%s; every frame uses the skin-colour fallback", error)

    def track(self, frames: Iterable[np.ndarray]) -> Iterator[TrackedFrame]:
        """Each frame with its face and skin region, in order (at most ``detect_every`` frames are buffered)."""
        for tracked in self._track(frames):
            self.report.count(tracked.source if tracked.masks is not None else "none")
            yield tracked

    def _track(self, frames: Iterable[np.ndarray]) -> Iterator[TrackedFrame]:
        pending: list[np.ndarray] = []
        last_face: FaceLandmarks | None = None  # the latest detected face
        key_face: FaceLandmarks | None = None  # the previous keyframe's face (None if it had none)
        since_face = 0
        gate = ColourGate()
        for index, frame in enumerate(frames):
            if index % self.detect_every:
                pending.append(frame)
                continue
            face = self._primary.detect(frame) if self._primary is not None else None
            if face is not None:
                gate = self._gate(frame, face)
            for offset, buffered in enumerate(pending, start=1):
                if face is not None and key_face is not None:
                    between = key_face.interpolate(face, offset / (len(pending) + 1))
                    yield self._region(buffered, between, "detector", gate)
                elif face is not None:
                    yield self._region(buffered, face, "held", gate)
                else:
                    since_face += 1
                    yield self._held_or_fallback(buffered, last_face, since_face, gate)
            pending = []
            key_face = face
            if face is not None:
                last_face, since_face = face, 0
                yield self._region(frame, face, "detector", gate)
            else:
                since_face += 1
                yield self._held_or_fallback(frame, last_face, since_face, gate)
        for buffered in pending:
            since_face += 1
            yield self._held_or_fallback(buffered, last_face, since_face, gate)

    def _held_or_fallback(self, frame: np.ndarray, previous: FaceLandmarks | None, since_face: int,
                          gate: ColourGate) -> TrackedFrame:
        if previous is not None and since_face <= self.hold_frames:
            return self._region(frame, previous, "held", gate)
        if self._fallback is not None:
            face = self._fallback.detect(frame)
            if face is not None:
                if self.report.fallback_reason is None:
                    self.report.fallback_reason = "MTCNN found no face on some frames"
                return self._region(frame, face, "fallback", gate)
        return TrackedFrame(frame, None, "none")

    def _gate(self, frame: np.ndarray, face: FaceLandmarks) -> ColourGate:
        if face.points is None:
            return ColourGate()
        masks, (x0, y0, x1, y1) = _polygon_masks(frame.shape[:2], self.regions.polygons(face.points))
        union = np.logical_or.reduce(masks)
        if not union.any():
            return ColourGate()
        ycrcb = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2YCrCb)
        return ColourGate.fit(ycrcb[union].astype(np.float32), self.regions)

    def _region(self, frame: np.ndarray, face: FaceLandmarks, source: str, gate: ColourGate) -> TrackedFrame:
        if face.points is None:
            height, width = frame.shape[:2]
            x0, y0, x1, y1 = np.round(face.box).astype(int)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if x1 <= x0 or y1 <= y0:
                return TrackedFrame(frame, face, source)
            mask = skin_mask(frame[y0:y1, x0:x1])
            if not mask.any():
                mask = np.ones((y1 - y0, x1 - x0), bool)
            return TrackedFrame(frame, face, source, [mask], (x0, y0, x1, y1))
        masks, box = _polygon_masks(frame.shape[:2], self.regions.polygons(face.points))
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return TrackedFrame(frame, face, source)
        skin = gate(cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2YCrCb))
        masks = [mask & skin for mask in masks]
        if sum(int(mask.sum()) for mask in masks) < self.regions.min_pixels:
            return TrackedFrame(frame, face, source)
        return TrackedFrame(frame, face, source, masks, box)
