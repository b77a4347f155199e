"""Landmark-driven warps: move any mesh so that its landmarks go where they are sent (thin-plate splines in 3D).

`ThinPlateSpline` is the smooth interpolant with the least bending energy that maps control points onto their
targets: ``f(p) = A p + b + sum_i w_i |p - c_i|`` (the 3D biharmonic kernel ``U(r) = r``), so a control point lands
exactly on its target (with ``regularization=0``), an affine motion of all control points moves every point by that
same affine motion, and control points that do not move leave the mesh where it is.

`transfer_motion` turns real landmark motion (`facet_vlm.geometry.motion.LandmarkMotion`, e.g. a BU-4DFE sequence)
into a sequence of meshes of another face: each frame's motion from the neutral frame, divided by the source's
inter-ocular distance, times the target's, turned from the canonical axes into the target's own axes, is added to the
target's landmarks, and the mesh is warped onto them. A thin-plate spline is smooth: it stretches a closed mouth
rather than parting the lips; a mesh whose lips are separate surfaces can open.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..face import Face
from .motion import NUM_POINTS, LandmarkMotion, MotionOptions, canonical_axes


class ThinPlateSpline:
    """A 3D thin-plate spline mapping `source` control points (k, 3) onto `target` (k, 3).

    Args:
        source, target: corresponding control points (k >= 4, not all in one plane).
        regularization: smoothing weight added to the kernel's diagonal (0: exact interpolation).

    Raises:
        ConfigError: on mismatched shapes, fewer than 4 points, non-finite values, or control points whose system
            cannot be solved (points repeated or all in one plane without regularization).
    """

    def __init__(self, source: np.ndarray, target: np.ndarray, regularization: float = 0.0):
        source = np.asarray(source, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
            raise ConfigError(f"source and target must both be (k, 3); got {source.shape} and {target.shape}")
        if len(source) < 4:
            raise ConfigError(f"a 3D thin-plate spline needs at least 4 control points, got {len(source)}")
        if not (np.isfinite(source).all() and np.isfinite(target).all()):
            raise ConfigError("control points must be finite")
        if regularization < 0:
            raise ConfigError(f"regularization must be non-negative, got {regularization}")
        k = len(source)
        kernel = np.linalg.norm(source[:, None] - source[None], axis=-1) + regularization * np.eye(k)
        affine = np.concatenate([source, np.ones((k, 1))], axis=1)
        system = np.zeros((k + 4, k + 4))
        system[:k, :k], system[:k, k:], system[k:, :k] = kernel, affine, affine.T
        rhs = np.zeros((k + 4, 3))
        rhs[:k] = target
        try:
            solution = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            raise ConfigError("the control points do not define a thin-plate spline (repeated points, or all in "
                              "one plane); pass regularization > 0") from None
        self.source, self.weights, self.affine = source, solution[:k], solution[k:]

    def __call__(self, points: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """The warped positions (n, 3) of `points` (n, 3)."""
        points = np.asarray(points, dtype=np.float64)
        out = np.empty_like(points)
        for start in range(0, len(points), chunk):
            block = points[start:start + chunk]
            kernel = np.linalg.norm(block[:, None] - self.source[None], axis=-1)
            out[start:start + chunk] = kernel @ self.weights + block @ self.affine[:3] + self.affine[3]
        return out


def warp_face(face: Face, source: np.ndarray, target: np.ndarray, regularization: float = 0.0) -> Face:
    """A copy of `face` whose vertices (and landmarks) are moved by the thin-plate spline `source` -> `target`."""
    spline = ThinPlateSpline(source, target, regularization)
    landmarks = None if face.landmarks is None else spline(face.landmarks).astype(np.float32)
    return face.copy(vertices=spline(face.vertices).astype(np.float32), landmarks=landmarks)


def _target_points(face: Face, landmarks: np.ndarray | None) -> np.ndarray:
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64)
    elif face.landmarks is not None and len(face.landmarks) >= NUM_POINTS:
        points = face.landmarks[:NUM_POINTS].astype(np.float64)
    else:
        raise ConfigError(f"the target face needs its {NUM_POINTS} BU-3DFE-layout landmarks (face.landmarks[:83]) "
                          "or landmarks= given")
    if points.shape != (NUM_POINTS, 3):
        raise ConfigError(f"target landmarks must be ({NUM_POINTS}, 3), got {points.shape}")
    return points


def transferred_landmarks(motion: LandmarkMotion | np.ndarray, landmarks: np.ndarray,
                          frames: list[int] | None = None, scale: float | None = None,
                          options: MotionOptions | None = None) -> np.ndarray:
    """Where a face's 83 `landmarks` (its neutral face, any pose) go under `motion`: (F, 83, 3).

    Args:
        motion: a `LandmarkMotion`, or normalized displacements (T, 83, 3) in canonical axes (motion divided by the
            source's inter-ocular distance, as `LandmarkMotion.displacements()` gives them).
        landmarks: the target's neutral landmarks in the target's own coordinates.
        frames: which frames (default: all).
        scale: millimetres per normalized unit; default the target's own inter-ocular distance.
    """
    options = options or MotionOptions()
    displacement = motion.displacements() if isinstance(motion, LandmarkMotion) else np.asarray(motion, float)
    if displacement.ndim != 3 or displacement.shape[1:] != (NUM_POINTS, 3):
        raise ConfigError(f"motion must be (frames, {NUM_POINTS}, 3), got {displacement.shape}")
    frames = list(range(len(displacement))) if frames is None else [int(i) for i in frames]
    rotation, _, interocular = canonical_axes(landmarks, options.stable_points)
    size = interocular if scale is None else float(scale)
    return landmarks[None] + (displacement[frames] * size) @ rotation


def transfer_motion(face: Face, motion: LandmarkMotion | np.ndarray, frames: list[int] | None = None,
                    landmarks: np.ndarray | None = None, scale: float | None = None, regularization: float = 0.0,
                    options: MotionOptions | None = None) -> list[Face]:
    """Meshes of `face` making the expression of `motion`, one per frame (see the module docstring).

    Args:
        face: the target mesh with a neutral expression; its 83 BU-3DFE-layout landmarks are ``face.landmarks[:83]``
            unless `landmarks` gives them.
        motion, frames, scale: as `transferred_landmarks`.
        regularization: of the thin-plate spline (0: the landmarks land exactly on their targets).

    Returns:
        One `Face` per frame: the warped mesh, its first 83 landmarks at their targets (other landmarks warped with
        the mesh), ``meta["motion_frame"]`` the source frame.
    """
    points = _target_points(face, landmarks)
    targets = transferred_landmarks(motion, points, frames, scale, options)
    frames = list(range(len(targets))) if frames is None else [int(i) for i in frames]
    out = []
    for frame, target in zip(frames, targets):
        spline = ThinPlateSpline(points, target, regularization)
        moved = face.copy(vertices=spline(face.vertices).astype(np.float32))
        moved.meta["motion_frame"] = frame
        if face.landmarks is not None:
            marks = spline(face.landmarks)
            if landmarks is None:
                marks[:NUM_POINTS] = target
            moved.landmarks = marks.astype(np.float32)
        out.append(moved)
    return out
