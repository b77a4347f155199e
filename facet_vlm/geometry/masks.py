"""Salient-region masks (eyes, brows, nose, mouth) in the frontal view, for mask attention (AFNet-M).

Each region is one or two ellipses in the canonical frame, drawn with the frontal camera of
:func:`~facet_vlm.geometry.render_views` (view (0, 0)), so mask pixel (i, j) lies over image pixel (i, j). Masks
are soft: 1 inside an ellipse and a gaussian fall-off ``exp(-d² / 2σ²)`` outside it, d being the distance beyond the
boundary along the ray from the ellipse centre; soft edges tolerate landmark noise and give attention a gradient.
``sigma=0`` gives hard 0/1 masks.

Ellipses come from the scan's landmarks (standard names) when a region's landmarks are all present, else from
BU-3DFE ``.bnd`` contours (:data:`~facet_vlm.geometry.align.BND_GROUPS`: an ellipse with the contour points' second
moments, half-axes sqrt(2 var) x :data:`BND_MARGIN`, the minor at least 0.35 x the major), otherwise from
:data:`TEMPLATE_MM`, a mean adult face in millimetres relative to the nose tip in the canonical frame. From named
points:

* eyes: centred between the inner and outer corner of each eye, half-length 0.7 x the corner distance along it,
  half-height 0.55 x that;
* brows: centred between the inner and outer brow ends, half-length 0.6 x their distance, half-height 0.35 x that;
* nose: from the eye line down to 0.45 x (eye line to nose tip) below the tip, half-width 0.3 x the distance
  between the eye centres;
* mouth: around the mouth corners and lips, half-width 0.625 x the corner distance, half-height the larger of
  0.65 x the lip distance and 0.35 x the half-width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..face import Face
from .align import bnd_groups
from .render import pixel_grid

REGION_NAMES: tuple[str, ...] = ("eyes", "brows", "nose", "mouth")
REGION_LANDMARKS: dict[str, tuple[str, ...]] = {
    "eyes": ("left_eye_outer", "left_eye_inner", "right_eye_inner", "right_eye_outer"),
    "brows": ("left_brow_inner", "left_brow_outer", "right_brow_inner", "right_brow_outer"),
    "nose": ("nose_tip", "left_eye_outer", "left_eye_inner", "right_eye_inner", "right_eye_outer"),
    "mouth": ("mouth_left", "mouth_right", "upper_lip", "lower_lip"),
}
TEMPLATE_MM: dict[str, tuple[float, float]] = {
    "nose_tip": (0.0, 0.0),
    "left_eye_outer": (45.0, 35.0),
    "left_eye_inner": (16.0, 33.0),
    "right_eye_inner": (-16.0, 33.0),
    "right_eye_outer": (-45.0, 35.0),
    "left_brow_inner": (15.0, 50.0),
    "left_brow_outer": (50.0, 52.0),
    "right_brow_inner": (-15.0, 50.0),
    "right_brow_outer": (-50.0, 52.0),
    "mouth_left": (25.0, -35.0),
    "mouth_right": (-25.0, -35.0),
    "upper_lip": (0.0, -27.0),
    "lower_lip": (0.0, -45.0),
}

BND_REGIONS: dict[str, tuple[str, ...]] = {
    "eyes": ("eye_a", "eye_b"), "brows": ("brow_a", "brow_b"), "nose": ("nose",), "mouth": ("mouth",),
}
BND_MARGIN: dict[str, float] = {"eyes": 1.4, "brows": 1.2, "nose": 1.2, "mouth": 1.25}

Ellipse = tuple[np.ndarray, np.ndarray, float, float]  # centre (2,), unit major axis (2,), half-major, half-minor


def _ellipse_between(p: np.ndarray, q: np.ndarray, length_factor: float, height_ratio: float) -> Ellipse:
    axis = q - p
    distance = float(np.linalg.norm(axis))
    direction = axis / distance if distance > 0 else np.array([1.0, 0.0])
    half = max(length_factor * distance, 1e-6)
    return 0.5 * (p + q), direction, half, height_ratio * half


def _region_ellipses(region: str, points: dict[str, np.ndarray]) -> list[Ellipse]:
    if region == "eyes":
        return [_ellipse_between(points[f"{s}_eye_inner"], points[f"{s}_eye_outer"], 0.7, 0.55) for s in
                ("left", "right")]
    if region == "brows":
        return [_ellipse_between(points[f"{s}_brow_inner"], points[f"{s}_brow_outer"], 0.6, 0.35) for s in
                ("left", "right")]
    if region == "nose":
        left = 0.5 * (points["left_eye_inner"] + points["left_eye_outer"])
        right = 0.5 * (points["right_eye_inner"] + points["right_eye_outer"])
        eye_mid, tip = 0.5 * (left + right), points["nose_tip"]
        top, bottom = eye_mid, tip - 0.45 * (eye_mid - tip)
        centre, half_height = 0.5 * (top + bottom), 0.5 * float(np.linalg.norm(top - bottom))
        up = (top - bottom) / max(half_height * 2.0, 1e-9)
        half_width = 0.3 * float(np.linalg.norm(left - right))
        return [(centre, up, max(half_height, 1e-6), max(half_width, 1e-6))]
    corners = (points["mouth_left"], points["mouth_right"])
    centre = np.mean([*corners, points["upper_lip"], points["lower_lip"]], axis=0)
    _, direction, half_width, _ = _ellipse_between(corners[1], corners[0], 0.625, 0.0)
    half_height = max(0.65 * float(np.linalg.norm(points["upper_lip"] - points["lower_lip"])), 0.35 * half_width)
    return [(centre, direction, half_width, half_height)]


def _moment_ellipse(points: np.ndarray, margin: float) -> Ellipse:
    """The ellipse with the second moments of points spread along its contour, enlarged by `margin`."""
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((points - centre).T) if len(points) > 1 else np.zeros((2, 2)))
    half_major = max(margin * float(np.sqrt(2.0 * max(values[1], 0.0))), 1e-6)
    half_minor = max(margin * float(np.sqrt(2.0 * max(values[0], 0.0))), 0.35 * half_major)
    return centre, vectors[:, 1], half_major, half_minor


def _draw(ellipse: Ellipse, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    centre, direction, half_major, half_minor = ellipse
    dx, dy = x - centre[0], y - centre[1]
    along = dx * direction[0] + dy * direction[1]
    across = -dx * direction[1] + dy * direction[0]
    radius = np.sqrt((along / half_major) ** 2 + (across / half_minor) ** 2)
    if sigma <= 0:
        return (radius <= 1.0).astype(np.float32)
    outside = np.hypot(dx, dy) * np.clip(1.0 - 1.0 / np.maximum(radius, 1e-12), 0.0, None)
    return np.exp(-0.5 * (outside / sigma) ** 2).astype(np.float32)


def check_regions(regions: Sequence[str], name: str = "regions") -> None:
    """Raise a `ConfigError` (naming the argument `name`) unless `regions` is a non-empty choice of
    :data:`REGION_NAMES`."""
    unknown = [r for r in regions if r not in REGION_NAMES]
    if unknown or not regions:
        raise ConfigError(f"{name}={tuple(regions)!r}: choose among {REGION_NAMES}")


def _face_ellipses(face: Face, regions: Sequence[str]) -> list[list[Ellipse]]:
    """Each region's ellipses in the aligned face's frontal plane (landmarks, else ``.bnd`` contours, else the
    template; see the module docstring). `face` must be aligned, `regions` checked (`check_regions`)."""
    mm = float(face.meta.get("align", {}).get("scale", 1.0 / 90.0))
    template = {name: np.asarray(xy) * mm for name, xy in TEMPLATE_MM.items()}
    contours = bnd_groups(face)
    per_region = []
    for region in regions:
        found = {name: face.landmark(name) for name in REGION_LANDMARKS[region]}
        if all(p is not None and np.all(np.isfinite(p)) for p in found.values()):
            ellipses = _region_ellipses(region, {name: p[:2].astype(np.float64) for name, p in found.items()})
        elif contours is not None:
            ellipses = [_moment_ellipse(contours[g][:, :2], BND_MARGIN[region]) for g in BND_REGIONS[region]]
        else:
            ellipses = _region_ellipses(region, template)
        per_region.append(ellipses)
    return per_region


def region_masks(
    face: Face,
    size: int = 224,
    regions: Sequence[str] = REGION_NAMES,
    sigma: float = 0.03,
    align_first: bool = True,
) -> np.ndarray:
    """Soft masks of facial regions in the frontal view.

    Args:
        face: the scan; aligned first unless ``align_first=False`` or already aligned.
        size: mask height and width (same pixel grid as :func:`~facet_vlm.geometry.render_views`).
        regions: names among :data:`REGION_NAMES`, stacked in this order.
        sigma: width of the gaussian edge in normalised face units (fractions of the crop radius; 0.03 is 2.7 mm
            for the default 90 mm crop); 0 gives hard masks.
        align_first: align the face first.

    Returns:
        float32 (R, size, size) in [0, 1].
    """
    from .align import align, is_aligned

    check_regions(regions)
    if sigma < 0:
        raise ConfigError(f"sigma={sigma}: must be >= 0")
    if align_first and not is_aligned(face):
        face = align(face)
    extent = float(face.meta.get("align", {}).get("extent", 1.0))
    x, y = pixel_grid(size, extent)
    masks = np.zeros((len(regions), size, size), np.float32)
    for r, ellipses in enumerate(_face_ellipses(face, regions)):
        for ellipse in ellipses:
            masks[r] = np.maximum(masks[r], _draw(ellipse, x, y, sigma * extent))
    return masks


def region_weights(face: Face, xy: np.ndarray, regions: Sequence[str] = REGION_NAMES,
                   sigma: float = 0.1) -> np.ndarray:
    """The soft union of the regions' ellipses at points of the aligned face's frontal plane.

    Args:
        face: the aligned scan (its landmarks, ``.bnd`` contours or the template place the ellipses).
        xy: (K, 2) positions in the aligned frame (x right, y up; the frontal view's plane).
        regions: names among :data:`REGION_NAMES`.
        sigma: width of the gaussian fall-off outside the ellipses, in aligned units (fractions of the crop
            radius: 0.1 is 9 mm for the default 90 mm crop); 0 gives 0/1 weights.

    Returns:
        float (K,) in [0, 1]: 1 inside any region's ellipse.
    """
    check_regions(regions)
    if sigma < 0:
        raise ConfigError(f"sigma={sigma}: must be >= 0")
    xy = np.asarray(xy, dtype=np.float64)
    weights = np.zeros(len(xy), np.float32)
    for ellipses in _face_ellipses(face, regions):
        for ellipse in ellipses:
            weights = np.maximum(weights, _draw(ellipse, xy[:, 0], xy[:, 1], sigma))
    return weights
