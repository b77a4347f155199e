"""Real 3D landmark motion in a canonical frame: BU-4DFE / BU-3DFE 83-point sequences cleaned and aligned.

A landmark sequence (T frames x 83 points x 3, millimetres, as the BU-4DFE landmark release and the BP4D ``.tbnd``
files hold them) mixes three things: the expression, the head's rigid motion and the tracker's errors. This module
separates them so that the motion can be compared between people and moved onto other faces
(`facet_vlm.geometry.warp`):

1. **Glitches.** On the 41 development subjects of BU-4DFE, single landmarks jump by 125-340 mm for one to three
   frames. After the frames are aligned (2.), a point farther than `MotionOptions.glitch_mm` from the temporal median
   of its aligned positions (`MotionOptions.median_window` frames), or not finite, is flagged and replaced by linear
   interpolation between the nearest unflagged frames of the same point. Every replaced point is listed
   (`LandmarkMotion.repairs`): nothing is used silently.
2. **Head motion.** Each frame is aligned with the neutral frame by the rigid motion (Kabsch, no scaling) that best
   maps its `STABLE_POINTS` onto the neutral frame's, refitted without a stable point left far off (a glitch must
   not tilt the frame), and refined once the glitches are repaired.
3. **Canonical axes** (`canonical_axes`), from the neutral frame: x from the centre of the first eye contour (points
   0-7) to the second (8-15), y from the mouth centre (48-67) to the eye midpoint made orthogonal to x, z = x × y;
   should the nose (36-47) lie behind the eyes' plane (a mirrored, left-handed coordinate system such as the one the
   BP4D user guide states for its ``.tbnd`` files), x and z are negated so that the face always looks toward +z. The
   origin is the centroid of the neutral frame's `STABLE_POINTS`.
4. **The contour.** The face-outline points (68-82) slide 10-30 mm in depth between frames: the tracker's, not the
   face's motion. With ``contour="fixed_depth"`` (default) their canonical depth is replaced by its median over the
   sequence; their in-plane motion (the chin dropping with the jaw) is kept. ``"keep"`` leaves them as read.

Then the expression's course: its magnitude per frame (mean distance of the non-contour points from the neutral
frame), the apex (largest magnitude), the onset (the first frame on the way from the neutral frame to the apex that
reaches `MotionOptions.onset_fraction` of the apex magnitude: BU-3DFE-like intensity 3 when the apex is intensity 4)
and the offset (the first frame after the apex, away from the neutral frame, that falls below that fraction again).

The layout (0-based) is the one the BU-4DFE landmark release holds: eyes 0-15 (each contour from its inner corner over
the upper lid to the outer corner and back along the lower lid), brows 16-35 (each from its inner end along the upper
edge, back along the lower edge), nose 36-47 (its outline, 36-41 on the first eye's side from the bridge down to the
subnasale, 42-47 back up on the other), mouth 48-67 (outer contour from the corner on the first eye's side, then the
inner contour), contour 68-82 (from the temple on the first eye's side round the chin, 75, to the other temple).
The mirror pairs of `MIRROR` were checked on the development subjects' mean neutral face (each point within 0.06
inter-ocular distances of its mirrored partner).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FormatError

#: Number of points of the BU-3DFE / BU-4DFE layout.
NUM_POINTS = 83
#: Regions of the 83-point layout (0-based index ranges).
REGIONS: dict[str, range] = {"eyes": range(0, 16), "brows": range(16, 36), "nose": range(36, 48),
                             "mouth": range(48, 68), "contour": range(68, 83)}
CONTOUR = tuple(REGIONS["contour"])
#: Every point but the contour: what expression magnitudes are measured on.
INNER = tuple(range(0, 68))
#: Points the rigid alignment uses: the four eye corners and six nose-outline points (bridge and nostril base).
#: Measured on the 41 development subjects of BU-4DFE: after alignment these move 1.0-1.6 mm on average over a
#: sequence, the brows 2.2-2.9 mm, the mouth 2.5-5 mm, the contour 2.6-5.1 mm.
STABLE_POINTS = (0, 4, 8, 12, 36, 40, 41, 42, 43, 47)
#: MIRROR[i]: the point on the other side of the face that corresponds to point i (midline points map to themselves).
MIRROR = (tuple(range(8, 16)) + tuple(range(0, 8)) + tuple(range(26, 36)) + tuple(range(16, 26))
          + tuple(range(47, 35, -1)) + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)
          + (64, 63, 62, 61, 60, 67, 66, 65) + tuple(range(82, 67, -1)))
CONTOUR_MODES = ("fixed_depth", "keep")


@dataclass
class MotionOptions:
    """How a landmark sequence is cleaned and put into the canonical frame (see the module docstring).

    Args:
        stable_points: points the rigid alignment uses.
        median_window: frames of the temporal median (odd; the transforms are estimated on it and glitches measured
            against it). 7 covers the longest glitch seen on the development subjects (3 frames).
        glitch_mm: a point farther than this from the temporal median (after alignment) is a glitch. On the
            development subjects 99.99 % of the non-contour points lie within 8 mm of it; glitches lie 40-355 mm off.
        contour: "fixed_depth" (the contour's canonical depth is its median over the sequence) or "keep".
        onset_fraction: share of the apex magnitude that marks the onset (and the offset).
        neutral_tolerance_mm: `choose_neutral_frames` takes a sequence's first frame as its neutral face unless it
            lies more than this farther from the subject's neutral face than the sequence's closest frame does.
            On the development subjects 19 of 246 sequences (7.7 %) exceed 3 mm.
    """

    stable_points: tuple[int, ...] = STABLE_POINTS
    median_window: int = 7
    glitch_mm: float = 20.0
    contour: str = "fixed_depth"
    onset_fraction: float = 0.6
    neutral_tolerance_mm: float = 3.0

    def __post_init__(self) -> None:
        self.stable_points = tuple(int(i) for i in self.stable_points)
        if len(self.stable_points) < 3 or not all(0 <= i < NUM_POINTS for i in self.stable_points):
            raise ConfigError(f"stable_points must name at least 3 of the {NUM_POINTS} points, got "
                              f"{self.stable_points}")
        if self.median_window < 1 or self.median_window % 2 == 0:
            raise ConfigError(f"median_window must be a positive odd number of frames, got {self.median_window}")
        if self.glitch_mm <= 0 or self.neutral_tolerance_mm < 0:
            raise ConfigError(f"glitch_mm must be positive and neutral_tolerance_mm non-negative, got "
                              f"{self.glitch_mm}, {self.neutral_tolerance_mm}")
        if self.contour not in CONTOUR_MODES:
            raise ConfigError(f"contour must be one of {CONTOUR_MODES}, got {self.contour!r}")
        if not 0 < self.onset_fraction < 1:
            raise ConfigError(f"onset_fraction must lie in (0, 1), got {self.onset_fraction}")


@dataclass
class Repair:
    """One replaced point: `frame` and `point` indices, how far it lay from the temporal median (mm; inf when it
    was not finite)."""

    frame: int
    point: int
    distance_mm: float

    def __str__(self) -> str:
        what = "not finite" if not np.isfinite(self.distance_mm) else f"{self.distance_mm:.0f} mm off"
        return f"frame {self.frame} point {self.point}: {what}, interpolated"


@dataclass
class LandmarkMotion:
    """A landmark sequence in the canonical frame of its neutral face (see the module docstring).

    Attributes:
        landmarks: float64 (T, 83, 3), millimetres, every frame rigidly aligned with the neutral frame.
        neutral, apex, onset, offset: frame indices (offset -1 when the expression does not fall back below the
            onset fraction after the apex).
        magnitude: (T,) mean distance (mm) of the non-contour points from the neutral frame.
        interocular: distance (mm) between the two eye-contour centres of the neutral frame.
        transforms: (T, 3, 4) the rigid map of each raw frame into the canonical frame:
            ``canonical = raw @ transforms[t, :, :3].T + transforms[t, :, 3]``.
        repairs: the points replaced as glitches.
        path: where the sequence was read from ("" when built in memory).
    """

    landmarks: np.ndarray
    neutral: int
    apex: int
    onset: int
    offset: int
    magnitude: np.ndarray
    interocular: float
    transforms: np.ndarray
    repairs: list[Repair] = field(default_factory=list)
    path: str = ""

    @property
    def num_frames(self) -> int:
        return len(self.landmarks)

    def displacements(self, normalized: bool = True) -> np.ndarray:
        """(T, 83, 3) motion of every point from the neutral frame; divided by the inter-ocular distance when
        `normalized` (so that people of different sizes compare)."""
        motion = self.landmarks - self.landmarks[self.neutral]
        return motion / self.interocular if normalized else motion


def rigid_fit(reference: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation R (3, 3) and translation t (3,) that best map `moving` onto `reference` (both (k, 3)):
    ``moving @ R.T + t`` ≈ `reference` in the least-squares sense (Kabsch, no reflection, no scaling)."""
    reference = np.asarray(reference, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    ref_centre, mov_centre = reference.mean(0), moving.mean(0)
    u, _, vt = np.linalg.svd((reference - ref_centre).T @ (moving - mov_centre))
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return rotation, ref_centre - rotation @ mov_centre


def temporal_median(sequence: np.ndarray, window: int) -> np.ndarray:
    """Per point and coordinate, the median over `window` frames centred on each frame (shorter at the ends);
    non-finite values are ignored (NaN where a point is never finite in a window)."""
    half = window // 2
    out = np.empty_like(sequence, dtype=np.float64)
    for t in range(len(sequence)):
        block = sequence[max(0, t - half): t + half + 1]
        finite = np.isfinite(block).all(axis=-1)
        if finite.all():
            out[t] = np.median(block, axis=0)
        else:
            out[t] = _nan_median(np.where(finite[..., None], block, np.nan))
    return out


def _nan_median(block: np.ndarray) -> np.ndarray:
    result = np.full(block.shape[1:], np.nan)
    seen = np.isfinite(block).all(axis=-1).any(axis=0)
    result[seen] = np.nanmedian(block[:, seen], axis=0)
    return result


def canonical_axes(frame: np.ndarray, stable_points: tuple[int, ...] = STABLE_POINTS
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """The canonical frame of one 83-point frame: (rotation (3, 3) whose rows are the x, y, z axes, origin (3,),
    inter-ocular distance in mm). Canonical coordinates are ``(points - origin) @ rotation.T``.

    Raises:
        FormatError: when the eye or mouth points coincide (no frame can be built).
    """
    frame = np.asarray(frame, dtype=np.float64)
    first, second = frame[0:8].mean(0), frame[8:16].mean(0)
    axis = second - first
    interocular = float(np.linalg.norm(axis))
    up = 0.5 * (first + second) - frame[48:68].mean(0)
    up = up - (up @ axis) / max(interocular ** 2, 1e-12) * axis
    if interocular < 1e-6 or np.linalg.norm(up) < 1e-6:
        raise FormatError("the eye and mouth landmarks coincide: no face frame can be built from them")
    x = axis / interocular
    y = up / np.linalg.norm(up)
    z = np.cross(x, y)
    if (frame[36:48].mean(0) - 0.5 * (first + second)) @ z < 0:
        x, z = -x, -z
    return np.stack([x, y, z]), frame[list(stable_points)].mean(0), interocular


def _glitches(aligned: np.ndarray, smooth: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        distance = np.linalg.norm(aligned - smooth, axis=-1)
    distance = np.where(np.isfinite(distance), distance, np.inf)
    return distance > limit, distance


def _interpolate(sequence: np.ndarray, flags: np.ndarray, path: str) -> np.ndarray:
    out = sequence.copy()
    frames = np.arange(len(sequence))
    for point in np.flatnonzero(flags.any(axis=0)):
        good = ~flags[:, point]
        if not good.any():
            raise FormatError(f"point {point} is a glitch or not finite in every frame; the sequence cannot be "
                              "repaired", path or None)
        for axis in range(3):
            out[:, point, axis] = np.interp(frames, frames[good], sequence[good, point, axis])
    return out


def _robust_fit(reference: np.ndarray, moving: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray] | None:
    """`rigid_fit` on the points finite in both, refitted without those left farther than max(`limit`, 3 x the
    median residual) from the reference (a glitch on a stable point must not tilt the frame); None with fewer than
    3 usable points."""
    usable = np.isfinite(reference).all(axis=1) & np.isfinite(moving).all(axis=1)
    for _ in range(3):
        if usable.sum() < 3:
            return None
        rotation, shift = rigid_fit(reference[usable], moving[usable])
        residual = np.linalg.norm(moving @ rotation.T + shift - reference, axis=1)
        keep = usable & (residual <= max(limit, 3.0 * float(np.median(residual[usable]))))
        if keep.sum() < 3 or (keep == usable).all():
            break
        usable = keep
    return rotation, shift


def _align_all(sequence: np.ndarray, reference: int, stable: list[int], limit: float) -> np.ndarray:
    """(T, 3, 4) rigid transforms mapping each frame's stable points onto frame `reference`'s (`_robust_fit`); a
    frame without 3 usable stable points takes the transform of the nearest frame that has them."""
    transforms = np.full((len(sequence), 3, 4), np.nan)
    for t in range(len(sequence)):
        fit = _robust_fit(sequence[reference, stable], sequence[t, stable], limit)
        if fit is not None:
            transforms[t, :, :3], transforms[t, :, 3] = fit
    valid = np.flatnonzero(np.isfinite(transforms).all(axis=(1, 2)))
    if len(valid) == 0:
        raise FormatError("no frame has 3 usable stable points in common with the reference frame")
    for t in np.flatnonzero(~np.isfinite(transforms).all(axis=(1, 2))):
        transforms[t] = transforms[valid[np.argmin(np.abs(valid - t))]]
    return transforms


def _apply(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.einsum("tij,tpj->tpi", transforms[:, :, :3], points) + transforms[:, None, :, 3]


def expression_course(magnitude: np.ndarray, neutral: int, fraction: float) -> tuple[int, int, int]:
    """(apex, onset, offset) frame indices from a magnitude curve (see the module docstring)."""
    apex = int(np.argmax(magnitude))
    if magnitude[apex] <= 0:
        return neutral, neutral, -1
    step = 1 if apex >= neutral else -1
    threshold = fraction * magnitude[apex]
    onset = next(t for t in range(neutral, apex + step, step) if magnitude[t] >= threshold)
    after = range(apex + step, len(magnitude) if step > 0 else -1, step)
    offset = next((t for t in after if magnitude[t] < threshold), -1)
    return onset, apex, offset


def canonical_motion(raw: np.ndarray, neutral: int = 0, options: MotionOptions | None = None,
                     path: str = "") -> LandmarkMotion:
    """Clean a raw landmark sequence (T, 83, 3) and put it into the canonical frame of its `neutral` frame.

    Two passes: every frame is aligned on the stable points (robustly: `_robust_fit`) with the neutral frame, the
    glitches are found against the temporal median of the aligned sequence and interpolated, then the alignment is
    refined on the repaired frames (so that a glitch in the neutral frame itself does not shift every frame).

    Raises:
        FormatError: a sequence that is not (T, 83, 3) with T >= 1, a point that is never usable, or a neutral
            frame outside the sequence (the message names `path`).
    """
    options = options or MotionOptions()
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 3 or raw.shape[1:] != (NUM_POINTS, 3) or len(raw) == 0:
        raise FormatError(f"a landmark sequence must have shape (frames, {NUM_POINTS}, 3), got {raw.shape}",
                          path or None)
    if not 0 <= neutral < len(raw):
        raise FormatError(f"neutral frame {neutral} is outside the sequence of {len(raw)} frames", path or None)
    stable = list(options.stable_points)
    limit = options.glitch_mm / 4.0
    raw = np.where(np.isfinite(raw).all(axis=-1, keepdims=True), raw, np.nan)
    usable = np.flatnonzero(np.isfinite(raw[:, stable]).all(axis=-1).sum(axis=1) >= 3)
    if len(usable) == 0:
        raise FormatError("no frame has 3 finite stable points; the frames cannot be aligned", path or None)
    first = _align_all(raw, int(usable[np.argmin(np.abs(usable - neutral))]), stable, limit)
    aligned = _apply(first, raw)
    flags, distance = _glitches(aligned, temporal_median(aligned, options.median_window), options.glitch_mm)
    repairs = [Repair(int(t), int(p), float(distance[t, p])) for t, p in np.argwhere(flags)]
    aligned = _interpolate(np.where(flags[..., None], np.nan, aligned), flags, path)
    second = _align_all(aligned, neutral, stable, limit)
    aligned = _apply(second, aligned)
    to_reference = np.empty_like(first)
    to_reference[:, :, :3] = second[:, :, :3] @ first[:, :, :3]
    to_reference[:, :, 3] = np.einsum("tij,tj->ti", second[:, :, :3], first[:, :, 3]) + second[:, :, 3]
    rotation, origin, interocular = canonical_axes(aligned[neutral], options.stable_points)
    landmarks = (aligned - origin) @ rotation.T
    if options.contour == "fixed_depth":
        landmarks[:, CONTOUR, 2] = np.median(landmarks[:, CONTOUR, 2], axis=0)
    transforms = np.empty_like(to_reference)
    transforms[:, :, :3] = rotation @ to_reference[:, :, :3]
    transforms[:, :, 3] = (to_reference[:, :, 3] - origin) @ rotation.T
    magnitude = np.linalg.norm(landmarks[:, INNER] - landmarks[neutral, INNER], axis=-1).mean(axis=1)
    onset, apex, offset = expression_course(magnitude, neutral, options.onset_fraction)
    return LandmarkMotion(landmarks=landmarks, neutral=neutral, apex=apex, onset=onset, offset=offset,
                          magnitude=magnitude, interocular=interocular, transforms=transforms, repairs=repairs,
                          path=str(path))


def frame_distance(reference: np.ndarray, moving: np.ndarray, stable_points: tuple[int, ...] = STABLE_POINTS
                   ) -> float:
    """Mean distance (mm) of the non-contour points of two 83-point frames after aligning `moving` on the stable
    points of `reference`."""
    stable = list(stable_points)
    rotation, shift = rigid_fit(reference[stable], moving[stable])
    return float(np.linalg.norm((moving[list(INNER)] @ rotation.T + shift) - reference[list(INNER)], axis=-1).mean())


def choose_neutral_frames(sequences: list[np.ndarray], options: MotionOptions | None = None) -> list[int]:
    """The neutral frame of each of one subject's sequences ((T, 83, 3) arrays, glitch-free: e.g. the landmarks of
    `canonical_motion`).

    BU-4DFE sequences go neutral -> apex -> neutral, but about 7 % of the development subjects' sequences do not start
    at a neutral face. The subject's neutral face is taken as the medoid of the first and last frames of all their
    sequences (`frame_distance`); a sequence keeps frame 0 unless frame 0 lies more than
    `MotionOptions.neutral_tolerance_mm` farther from that face than the sequence's closest frame, which is then its
    neutral frame. With one sequence the first frame is used.
    """
    options = options or MotionOptions()
    if len(sequences) < 2:
        return [0] * len(sequences)
    ends = [frame for sequence in sequences for frame in (sequence[0], sequence[-1])]
    distances = np.array([[frame_distance(a, b, options.stable_points) for b in ends] for a in ends])
    distances = np.nan_to_num(distances, nan=np.inf)
    subject_neutral = ends[int(np.argmin(np.median(distances, axis=1)))]
    chosen = []
    for sequence in sequences:
        course = np.array([frame_distance(subject_neutral, frame, options.stable_points) for frame in sequence])
        course = np.nan_to_num(course, nan=np.inf)
        closest = int(np.argmin(course))
        chosen.append(0 if course[0] - course[closest] <= options.neutral_tolerance_mm else closest)
    return chosen


def subject_motions(sequences: list[np.ndarray], paths: list[str] | None = None,
                    options: MotionOptions | None = None) -> list[LandmarkMotion]:
    """`canonical_motion` of each of one subject's raw sequences, with the neutral frames `choose_neutral_frames`
    picks on the repaired sequences."""
    options = options or MotionOptions()
    paths = paths or [""] * len(sequences)
    first = [canonical_motion(raw, 0, options, path) for raw, path in zip(sequences, paths)]
    neutrals = choose_neutral_frames([motion.landmarks for motion in first], options)
    return [motion if neutral == 0 else canonical_motion(raw, neutral, options, path)
            for motion, raw, neutral, path in zip(first, sequences, neutrals, paths)]


def frame_shape(frame: np.ndarray, options: MotionOptions | None = None) -> np.ndarray:
    """One frame alone in its own canonical frame, divided by its inter-ocular distance: (83, 3). This is what a
    model sees of an expression without the person's neutral face."""
    options = options or MotionOptions()
    rotation, origin, interocular = canonical_axes(frame, options.stable_points)
    return (np.asarray(frame, dtype=np.float64) - origin) @ rotation.T / interocular
