"""A parametric, textured 3D face with facial action units: the engine of the synthetic data set.

The face is a height field z(x, y) over a regular grid (millimetres, y up, looking toward +z, nose tip near the
origin), so one surface gives both a triangle mesh (BU-3DFE style) and a range image (Bosphorus style). Everything
is an analytic, vectorised function of the *parametric* position (x, y) of a skin point:

- `base_depth` builds the neutral face from a head ellipsoid plus Gaussian features (eye sockets, brow ridge, nose,
  cheeks, lips, chin) whose sizes and places come from `SubjectParams`;
- `au_displacement` moves skin points by facial action units (FACS), a displacement field in mm per AU;
- the texture is painted in the same parametric frame (uv = the normalised parametric position), so it moves with the
  skin: brows rise with AU1/AU2, lips stretch with AU12. Where an expression changes what a camera sees rather than
  where the skin is (eye aperture, mouth interior, wrinkles), `ScanTexture` paints it per scan.

Landmarks (83 BU-3DFE-style points and the project's named points) are parametric positions pushed through the same
surface and displacement, so they follow the deformed face exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property

import cv2
import numpy as np

from ..errors import ConfigError
from ..face import Face

#: Action units the model implements (FACS numbers).
ACTION_UNITS = (1, 2, 4, 5, 6, 7, 9, 12, 15, 16, 20, 23, 26)

#: Prototypical AU combinations of the six basic expressions (EMFACS-style) and neutral.
EXPRESSION_AUS: dict[str, tuple[int, ...]] = {
    "anger": (4, 5, 7, 23),
    "disgust": (9, 15, 16),
    "fear": (1, 2, 4, 5, 20, 26),
    "happiness": (6, 12),
    "sadness": (1, 4, 15),
    "surprise": (1, 2, 5, 26),
    "neutral": (),
}

#: Skin tones from very light to very dark (sRGB), interpolated by a continuous tone value in [0, 1].
SKIN_TONE_ANCHORS = np.array(
    [(246, 221, 202), (233, 193, 166), (215, 169, 137), (192, 142, 106), (163, 112, 80), (124, 82, 57),
     (88, 58, 41), (62, 42, 31)], dtype=np.float32) / 255.0

#: BU-3DFE ethnicity codes, their approximate share of the real data set, and the skin-tone range sampled for each.
RACE_WEIGHTS = {"WH": 0.51, "AE": 0.24, "BL": 0.09, "LA": 0.06, "IN": 0.06, "AM": 0.04}
RACE_TONE_RANGE = {"WH": (0.0, 0.35), "AE": (0.1, 0.45), "AM": (0.2, 0.55), "LA": (0.2, 0.6), "IN": (0.35, 0.8),
                   "BL": (0.55, 1.0)}

#: Index of the project's standard landmark names in the 83-point BU-3DFE-style layout written to ``.bnd`` files.
#: Layout (0-based): 0-7 subject's right eye (image left; 0 outer corner, 1-3 upper lid, 4 inner corner, 5-7 lower
#: lid), 8-15 left eye (8 inner corner, 12 outer corner), 16-25 right brow (16 outer end, 17-19 upper edge, 20 inner
#: end, 21-25 lower edge), 26-35 left brow (26 inner end, 30 outer end), 36-47 nose (36 nasion, 37-40 right side down
#: to the nostril, 41 subnasale, 42-45 left side back up, 46 nose tip, 47 mid dorsum), 48-67 mouth (48 right corner,
#: 49-53 upper outer lip with 51 its top centre, 54 left corner, 55-59 lower outer lip with 57 its bottom centre,
#: 60-67 inner lip contour with 62 upper centre and 66 lower centre), 68-82 face contour from the right temple round
#: the chin (75) to the left temple.
BND_STANDARD_INDEX = {
    "right_eye_outer": 0, "right_eye_inner": 4, "left_eye_inner": 8, "left_eye_outer": 12,
    "right_brow_outer": 16, "right_brow_inner": 20, "left_brow_inner": 26, "left_brow_outer": 30,
    "nose_tip": 46, "mouth_right": 48, "upper_lip": 51, "mouth_left": 54, "lower_lip": 57, "chin": 75,
}
STANDARD_LANDMARKS = ("nose_tip", "left_eye_outer", "left_eye_inner", "right_eye_inner", "right_eye_outer",
                      "mouth_left", "mouth_right", "upper_lip", "lower_lip", "chin", "left_brow_inner",
                      "left_brow_outer", "right_brow_inner", "right_brow_outer")
BND_NAMES = [f"bnd_{i:02d}" for i in range(83)]

#: Largest random move of a grid point of a remeshed subject (`FaceModel(remesh=True)`), in grid steps: below 0.5,
#: so that every point stays in its grid cell (the range-image form keeps one point per cell).
REMESH_JITTER = 0.4

_MOUTH_GAP_TAU = 0.6  # mm: width of the lip-parting transition; sharp, so the mouth opens instead of stretching


def _g(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Unnormalised 2D Gaussian bump centred at (cx, cy)."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class SubjectParams:
    """Shape and appearance of one synthetic person (all lengths in mm, colours sRGB in [0, 1])."""

    sex: str
    race: str
    half_width: float  # half the face width at the cheekbones
    jaw: float  # jaw width as a fraction of the face width
    head_depth: float  # depth of the head ellipsoid (sideways curvature)
    forehead_slope: float  # backward curvature above the eyes (1/mm)
    chin_slope: float  # backward curvature below the eyes (1/mm)
    eye_x: float  # half the inter-pupil distance
    eye_y: float
    eye_width: float
    eye_upper: float  # upper aperture height above the eye centre
    eye_lower: float  # lower aperture depth below the eye centre
    canthal_tilt: float  # outer corner higher than the inner one by this much
    brow_y: float
    brow_ridge: float  # brow ridge protrusion
    brow_arch: float
    brow_thickness: float
    nasion_y: float
    subnasale_y: float
    nose_projection: float
    nose_root: float
    nose_width: float  # alar width
    bridge_width: float
    tip_width: float
    mouth_y: float  # lip line (stomion)
    mouth_width: float
    upper_lip: float  # upper red-lip height
    lower_lip: float
    lip_projection: float
    mouth_curve: float  # mouth corners above (+) or below (-) the lip line at rest
    cheek: float
    socket_depth: float
    chin_projection: float
    chin_width: float
    chin_y: float  # lowest point of the face
    top_y: float  # top of the scanned area
    hairline_y: float
    skin_tone: float
    skin_rgb: np.ndarray
    lip_tint: np.ndarray
    hair_rgb: np.ndarray
    iris_rgb: np.ndarray
    brow_density: float
    stubble: float
    au_gain: dict[int, float] = field(default_factory=dict)

    def half_width_at(self, y: np.ndarray) -> np.ndarray:
        """Half the face width at height y: widest at the cheekbones, narrowing to the jaw and the temples."""
        zygoma = self.eye_y - 12.0
        below = _smoothstep((y - self.chin_y) / (zygoma - self.chin_y))
        lower = self.jaw + (1.0 - self.jaw) * np.sqrt(below)
        upper = 1.0 - 0.1 * np.clip((y - zygoma) / (self.top_y - zygoma), 0.0, 1.0) ** 2
        return self.half_width * np.where(y < zygoma, lower, upper)

    def outline_at(self, y: np.ndarray) -> np.ndarray:
        """Half width of the scanned area at height y (the face outline, rounded at the chin and the top)."""
        chin_round = np.clip((self.chin_y + 28.0 - y) / 28.0, 0.0, 1.0)
        top_round = np.clip((y - (self.top_y - 30.0)) / 30.0, 0.0, 1.0)
        r = np.sqrt(np.clip(1.0 - chin_round ** 2.5, 0.0, 1.0)) * np.sqrt(np.clip(1.0 - top_round ** 4, 0.0, 1.0))
        return 0.95 * self.half_width_at(y) * r


def sample_subject(rng: np.random.Generator, sex: str, race: str, shape_spread: float = 0.0,
                   texture_spread: float = 0.0) -> SubjectParams:
    """Draw a random person; males are on average larger with a stronger brow ridge and a wider jaw.

    `shape_spread` widens every range of the face's geometry (lengths, curvatures, protrusions) about its centre by
    that share of its half-width on each side (0.5: a range [a, b] becomes [a - (b - a) / 4, b + (b - a) / 4]), for a
    wider identity-shape population. `texture_spread` widens the skin-tone range of the ethnicity the same way and
    adds up to 8 % x `texture_spread` of per-channel albedo variation. Both draw the same random numbers as without
    them, so 0 gives exactly the default subject.
    """
    male = sex == "M"
    u = rng.uniform
    shape = _widened(rng, shape_spread)
    subnasale = -shape(10.0, 14.0)
    nose_len = shape(44.0, 56.0) + (3.0 if male else 0.0)
    nasion = subnasale + nose_len
    eye_y = nasion - shape(0.0, 4.0)
    mouth_y = subnasale - shape(14.0, 21.0) - (2.0 if male else 0.0)
    tone = float(np.clip(_widened(rng, texture_spread)(*RACE_TONE_RANGE[race]), 0.0, 1.0))
    position = tone * (len(SKIN_TONE_ANCHORS) - 1)
    low = int(min(position, len(SKIN_TONE_ANCHORS) - 2))
    skin = SKIN_TONE_ANCHORS[low] * (1 - (position - low)) + SKIN_TONE_ANCHORS[low + 1] * (position - low)
    skin = np.clip(skin * rng.normal(1.0, 0.02 + 0.08 * texture_spread, 3), 0.0, 1.0).astype(np.float32)
    if tone > 0.45 or rng.random() < 0.55:
        hair = np.array([0.09, 0.07, 0.06]) * u(0.6, 1.6)
    else:
        hair = np.array([[0.45, 0.33, 0.2], [0.3, 0.2, 0.12], [0.55, 0.3, 0.15], [0.62, 0.52, 0.35]])[
            rng.integers(4)]
    iris = np.array([[0.3, 0.18, 0.1], [0.2, 0.12, 0.07], [0.35, 0.45, 0.55], [0.35, 0.4, 0.25]])[
        0 if tone > 0.45 else rng.integers(4)]
    params = SubjectParams(
        sex=sex,
        race=race,
        half_width=shape(70.0, 78.0) if male else shape(66.0, 73.0),
        jaw=shape(0.68, 0.82) if male else shape(0.6, 0.74),
        head_depth=shape(70.0, 90.0),
        forehead_slope=shape(0.0025, 0.0045),
        chin_slope=shape(0.0015, 0.0028),
        eye_x=shape(29.0, 34.0),
        eye_y=eye_y,
        eye_width=shape(26.0, 31.0),
        eye_upper=shape(4.5, 6.5),
        eye_lower=shape(3.0, 4.5),
        canthal_tilt=shape(-1.0, 3.0),
        brow_y=eye_y + shape(13.0, 19.0),
        brow_ridge=shape(3.5, 7.0) if male else shape(1.5, 4.0),
        brow_arch=shape(1.0, 4.0),
        brow_thickness=shape(4.5, 7.0) if male else shape(3.5, 5.5),
        nasion_y=nasion,
        subnasale_y=subnasale,
        nose_projection=shape(19.0, 26.0) if male else shape(16.0, 23.0),
        nose_root=shape(2.0, 7.0),
        nose_width=shape(30.0, 42.0),
        bridge_width=shape(4.0, 6.5),
        tip_width=shape(6.5, 9.5),
        mouth_y=mouth_y,
        mouth_width=shape(46.0, 58.0) if male else shape(44.0, 54.0),
        upper_lip=shape(5.5, 9.0),
        lower_lip=shape(7.5, 12.0),
        lip_projection=shape(3.0, 7.0),
        mouth_curve=shape(-1.5, 1.0),
        cheek=shape(3.0, 8.0),
        socket_depth=shape(8.0, 12.0),
        chin_projection=shape(7.0, 13.0) if male else shape(6.0, 11.0),
        chin_width=shape(11.0, 17.0),
        chin_y=mouth_y - shape(40.0, 50.0) - (3.0 if male else 0.0),
        top_y=eye_y + shape(68.0, 82.0),
        hairline_y=eye_y + shape(55.0, 95.0),
        skin_tone=float(tone),
        skin_rgb=skin,
        lip_tint=np.array([u(0.82, 0.92), u(0.55, 0.68), u(0.58, 0.7)], dtype=np.float32),
        hair_rgb=np.asarray(hair, dtype=np.float32),
        iris_rgb=np.asarray(iris, dtype=np.float32) * u(0.8, 1.2),
        brow_density=u(0.55, 0.95),
        stubble=u(0.0, 1.0) if male and rng.random() < 0.35 else 0.0,
        au_gain={au: u(0.85, 1.15) for au in ACTION_UNITS},
    )
    return params


def _widened(rng: np.random.Generator, spread: float):
    """``uniform(a, b)`` over [a, b] widened by `spread` x (b - a) / 2 on each side (plain ``rng.uniform`` at 0)."""
    if spread <= 0:
        return rng.uniform

    def draw(low: float, high: float) -> float:
        margin = 0.5 * spread * (high - low)
        return rng.uniform(low - margin, high + margin)

    return draw


def base_depth(p: SubjectParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Neutral depth z(x, y) of the face (mm; the nose tip is the most forward point, near z = 0)."""
    ax = np.abs(x)
    a = p.half_width_at(y)
    u = np.clip(x / (a * 1.15), -0.99, 0.99)
    z = p.head_depth * (np.sqrt(1.0 - u * u) - 1.0) - 21.0
    dy = y - (p.eye_y - 12.0)
    z = z - np.where(dy > 0, p.forehead_slope, p.chin_slope) * dy * dy
    # Eyes: sockets, eyeballs, brow ridge, glabella, temples.
    z = z - p.socket_depth * _g(ax, y, p.eye_x, p.eye_y, 15.0, 10.0)
    z = z + 3.5 * _g(ax, y, p.eye_x, p.eye_y, 8.0, 5.5)
    z = z + p.brow_ridge * _g(ax, y, p.eye_x - 4.0, p.brow_y + 1.0, 20.0, 6.5)
    z = z + 0.6 * p.brow_ridge * _g(x, y, 0.0, p.brow_y - 2.0, 10.0, 8.0)
    z = z - 4.0 * _g(ax, y, 0.85 * p.half_width, p.brow_y, 9.0, 16.0)
    # Nose: a ridge from the nasion growing to the tip, then alae and a philtrum groove.
    length = p.nasion_y
    t = np.clip((p.nasion_y - y) / length, 0.0, 1.0)
    height = p.nose_root + (p.nose_projection - p.nose_root) * t ** 1.3
    height = np.where(y > p.nasion_y, p.nose_root * np.exp(-0.5 * ((y - p.nasion_y) / 7.0) ** 2), height)
    height = np.where(y < 0.0, p.nose_projection * np.exp(-0.5 * (y / 5.5) ** 2), height)
    width = p.bridge_width + (p.tip_width - p.bridge_width) * t ** 2
    z = z + height * np.exp(-0.5 * (x / width) ** 2)
    z = z + 6.0 * _g(ax, y, 0.5 * p.nose_width - 5.0, p.subnasale_y + 5.0, 5.0, 5.0)
    z = z - 0.8 * _g(x, y, 0.0, 0.5 * (p.mouth_y + p.upper_lip + p.subnasale_y), 2.0, 5.0)
    # Cheeks, maxilla, lips, chin.
    z = z + p.cheek * _g(ax, y, 38.0, p.eye_y - 28.0, 16.0, 14.0)
    z = z + 6.0 * _g(x, y, 0.0, p.mouth_y + 4.0, 25.0, 18.0)
    half_mouth = 0.5 * p.mouth_width
    z = z + p.lip_projection * _g(x, y, 0.0, p.mouth_y + 0.5 * p.upper_lip, 0.9 * half_mouth, 0.6 * p.upper_lip)
    z = z + p.lip_projection * _g(x, y, 0.0, p.mouth_y - 0.5 * p.lower_lip, 0.85 * half_mouth, 0.6 * p.lower_lip)
    z = z - 1.5 * _g(x, y, 0.0, p.mouth_y + p.mouth_curve * (x / half_mouth) ** 2, 0.9 * half_mouth, 0.8)
    z = z - 2.0 * _g(x, y, 0.0, p.mouth_y - p.lower_lip - 6.0, 15.0, 4.0)
    z = z + p.chin_projection * _g(x, y, 0.0, p.chin_y + 16.0, p.chin_width, 10.0)
    # Nasolabial crease: a shallow groove from the ala to beside the mouth corner.
    z = z - 0.7 * _nasolabial(p, x, y)
    return z


def _nasolabial(p: SubjectParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weight of the nasolabial fold line (1 on the line, Gaussian across it, faded at its ends)."""
    y_top, y_bottom = p.subnasale_y + 4.0, p.mouth_y - 6.0
    x_top, x_bottom = 0.5 * p.nose_width + 2.0, 0.5 * p.mouth_width + 5.0
    s = np.clip((y_top - y) / (y_top - y_bottom), 0.0, 1.0)
    line_x = x_top + (x_bottom - x_top) * s
    along = np.exp(-0.5 * ((y - 0.5 * (y_top + y_bottom)) / (0.45 * (y_top - y_bottom))) ** 4)
    return np.exp(-0.5 * ((np.abs(x) - line_x) / 2.0) ** 2) * along


def mouth_gap(p: SubjectParams, acts: dict[int, float], x: np.ndarray) -> np.ndarray:
    """How far (mm) the lower lip separates from the upper one at lateral position x (AU26 jaw drop, AU16)."""
    half_mouth = 0.5 * p.mouth_width
    lens = np.clip(1.0 - (x / half_mouth) ** 2, 0.0, 1.0) ** 0.7
    a26, a16 = _amount(p, acts, 26), _amount(p, acts, 16)
    return lens * (12.0 * a26 + 4.5 * a16 * np.exp(-0.5 * (x / (0.6 * half_mouth)) ** 2))


def _amount(p: SubjectParams, acts: dict[int, float], au: int) -> float:
    return float(acts.get(au, 0.0)) * p.au_gain.get(au, 1.0)


def au_displacement(p: SubjectParams, acts: dict[int, float], x: np.ndarray, y: np.ndarray,
                    asymmetry: float = 0.0) -> np.ndarray:
    """Displacement (N, 3) in mm of skin points at parametric (x, y) under AU activations ``{au: 0..1}``.

    Amplitudes at activation 1 are a few mm (brows 7, lip corners 7, jaw drop 12), in the range of real expressions.
    `asymmetry` makes the subject's left side move by (1 + asymmetry) and the right by (1 - asymmetry).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx, dy, dz = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    ax = np.abs(x)
    side = np.tanh(x / 5.0)  # smooth sign: lateral motions stay continuous across the midline
    inner_brow, outer_brow = p.eye_x - 0.5 * p.eye_width + 2.0, p.eye_x + 0.5 * p.eye_width + 2.0
    half_mouth = 0.5 * p.mouth_width
    a = {au: _amount(p, acts, au) for au in ACTION_UNITS}
    if a[1]:
        w = _g(ax, y, inner_brow, p.brow_y + 4.0, 11.0, 13.0)
        dy += 7.0 * a[1] * w
        dz += 0.6 * a[1] * w
    if a[2]:
        dy += 7.0 * a[2] * _g(ax, y, outer_brow - 4.0, p.brow_y + 3.0, 11.0, 13.0)
    if a[4]:
        w = _g(ax, y, inner_brow + 2.0, p.brow_y - 1.0, 11.0, 9.0)
        dy -= 4.5 * a[4] * w
        dx -= 3.5 * a[4] * w * side
        dz += 1.2 * a[4] * w + 1.5 * a[4] * _g(x, y, 0.0, p.brow_y - 3.0, 6.0, 7.0)
    if a[5]:
        w = _g(ax, y, p.eye_x, p.eye_y + 5.5, 9.0, 3.5)
        dy += 2.5 * a[5] * w
        dz -= 1.2 * a[5] * w
    if a[6]:
        w = _g(ax, y, p.eye_x + 3.0, p.eye_y - 15.0, 16.0, 10.0)
        dy += 4.5 * a[6] * w + 1.5 * a[6] * _g(ax, y, p.eye_x, p.eye_y - 5.0, 10.0, 3.5)
        dz += 2.5 * a[6] * w
    if a[7]:
        w = _g(ax, y, p.eye_x, p.eye_y - 5.0, 10.0, 3.5)
        dy += 1.8 * a[7] * w - 1.0 * a[7] * _g(ax, y, p.eye_x, p.eye_y + 5.0, 10.0, 3.5)
        dz += 0.8 * a[7] * w
    if a[9]:
        w = _g(ax, y, 0.5 * p.nose_width - 3.0, p.subnasale_y + 8.0, 8.0, 10.0)
        root = _g(x, y, 0.0, p.nasion_y - 6.0, 9.0, 8.0)
        lip = _g(x, y, 0.0, p.mouth_y + p.upper_lip, half_mouth / 1.25, 5.0)
        dy += a[9] * (3.5 * w - 1.5 * root + 2.5 * lip - 2.5 * _g(ax, y, inner_brow, p.brow_y, 10.0, 8.0))
        dz += a[9] * (1.0 * w + 1.0 * root)
    if a[12]:
        w = _g(ax, y, half_mouth, p.mouth_y, 12.0, 10.0)
        bulge = _g(ax, y, half_mouth + 13.0, p.mouth_y + 11.0, 9.0, 10.0)
        dy += a[12] * (7.0 * w + 2.0 * bulge)
        dx += 5.0 * a[12] * w * side
        dz += a[12] * (2.5 * bulge - 3.0 * w)
    if a[15]:
        w = _g(ax, y, half_mouth, p.mouth_y - 2.0, 10.0, 10.0)
        dy -= 5.0 * a[15] * w
        dz -= 0.5 * a[15] * w
    if a[20]:
        w = _g(ax, y, half_mouth, p.mouth_y, 11.0, 9.0)
        dx += 7.0 * a[20] * w * side
        dy -= 1.2 * a[20] * w
        dz -= a[20] * (2.0 * w + 1.5 * _g(x, y, 0.0, p.mouth_y, half_mouth / 1.5, 8.0))
    if a[23]:
        w = _g(x, y, 0.0, p.mouth_y, half_mouth / 1.15, 9.0)
        dy -= 0.35 * a[23] * (y - p.mouth_y) * w
        dz -= 1.8 * a[23] * w
        dx -= 2.5 * a[23] * _g(ax, y, half_mouth, p.mouth_y, 8.0, 6.0) * side
    if a[16] or a[26]:
        # Lips part along the lip line (sharp transition inside the mouth, smooth stretch of the cheeks outside).
        below_sharp = _sigmoid((p.mouth_y - y) / _MOUTH_GAP_TAU)
        below_smooth = _sigmoid((p.mouth_y - y) / 10.0)
        lens = np.clip(1.0 - (x / half_mouth) ** 2, 0.0, 1.0) ** 0.7
        if a[26]:
            jaw = np.exp(-0.5 * (x / (0.8 * p.half_width_at(y))) ** 4)
            drop = 12.0 * a[26] * jaw * (lens * below_sharp + (1.0 - lens) * below_smooth)
            dy -= drop
            dz -= 0.3 * drop * np.clip((p.mouth_y - y) / 40.0, 0.0, 1.0)
        if a[16]:
            lip_x = np.exp(-0.5 * (x / (0.6 * half_mouth)) ** 2)
            below_lip = np.where(y < p.mouth_y - p.lower_lip,
                                 np.exp(-0.5 * ((y - p.mouth_y + p.lower_lip) / 10.0) ** 2), 1.0)
            dy -= 4.5 * a[16] * lip_x * lens * below_sharp * below_lip
            dz += 2.0 * a[16] * _g(x, y, 0.0, p.mouth_y - 0.6 * p.lower_lip, half_mouth / 1.5, 0.6 * p.lower_lip)
    out = np.stack([dx, dy, dz], axis=-1)
    if asymmetry:
        out *= (1.0 + asymmetry * side)[..., None]
    return out


def eye_openness(acts: dict[int, float], p: SubjectParams) -> tuple[float, float]:
    """Scale of the upper and lower eye aperture (1 = neutral): AU5 widens, AU6 and AU7 narrow the eye."""
    a5, a6, a7, a4 = (_amount(p, acts, au) for au in (5, 6, 7, 4))
    upper = 1.0 + 0.6 * a5 - 0.35 * a7 - 0.15 * a6 - 0.15 * a4 + 0.1 * _amount(p, acts, 1)
    lower = 1.0 - 0.5 * a6 - 0.4 * a7 + 0.15 * a5
    blink = float(acts.get(45, 0.0))  # AU45 (blink, see MOVEMENTS): not in ACTION_UNITS, it moves no skin
    if blink:
        upper, lower = upper * (1.0 - 0.9 * blink), lower * (1.0 - 0.8 * blink)
        return float(np.clip(upper, 0.05, 1.8)), float(np.clip(lower, 0.05, 1.5))
    return float(np.clip(upper, 0.25, 1.8)), float(np.clip(lower, 0.25, 1.5))


def _eye_curves(p: SubjectParams, side: float, t: np.ndarray, openness: tuple[float, float]):
    """Upper and lower lid y at normalised position t in [-1, 1] across one eye (side +1 = subject's left)."""
    bulge = np.clip(1.0 - t * t, 0.0, 1.0)
    tilt = 0.5 * p.canthal_tilt * t * side
    upper = p.eye_y + tilt + p.eye_upper * openness[0] * bulge ** 0.8
    lower = p.eye_y + tilt - p.eye_lower * openness[1] * bulge ** 0.9
    return upper, lower


def _brow_curve(p: SubjectParams, side: float, t: np.ndarray):
    """Brow centre line y and half thickness at normalised position t (0 inner end, 1 outer end)."""
    inner_x = p.eye_x - 0.5 * p.eye_width - 1.0
    outer_x = p.eye_x + 0.5 * p.eye_width + 6.0
    x = side * (inner_x + (outer_x - inner_x) * t)
    y = p.brow_y - 0.5 + p.brow_arch * np.sin(np.pi * np.clip(t, 0, 1) * 0.8) - 2.5 * t
    half = 0.5 * p.brow_thickness * (1.0 - 0.55 * t)
    return x, y, half


def _lip_curves(p: SubjectParams, x: np.ndarray):
    """Upper and lower red-lip boundary y at lateral position x (cupid's bow on top)."""
    half_mouth = 0.5 * p.mouth_width
    s = np.clip(np.abs(x) / half_mouth, 0.0, 1.0)
    corner = p.mouth_y + p.mouth_curve * s ** 2
    bow = 1.0 - 0.18 * np.exp(-0.5 * (x / 2.5) ** 2) + 0.08 * np.exp(-0.5 * ((np.abs(x) - 5.0) / 3.0) ** 2)
    upper = corner + p.upper_lip * bow * np.sqrt(1.0 - s ** 2.2)
    lower = corner - p.lower_lip * np.sqrt(1.0 - s ** 1.8)
    return upper, lower, corner


def landmarks_2d(p: SubjectParams, acts: dict[int, float]) -> np.ndarray:
    """Parametric (x, y) of the 83 BU-3DFE-style points (layout in `BND_STANDARD_INDEX`), shape (83, 2)."""
    openness = eye_openness(acts, p)
    points: list[tuple[float, float]] = []
    for side in (-1.0, 1.0):  # image left (subject's right) first
        # Contour order: image-left corner, upper lid left to right, image-right corner, lower lid right to left.
        ts = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 0.5, 0.0, -0.5])
        upper, lower = _eye_curves(p, side, ts, openness)
        ys = np.where(np.arange(8) <= 4, upper, lower)
        ys[[0, 4]] = 0.5 * (upper[[0, 4]] + lower[[0, 4]])
        xs = side * p.eye_x + ts * 0.5 * p.eye_width
        points += list(zip(xs, ys))
    for side in (-1.0, 1.0):
        # Upper edge image-left to image-right (its ends are the brow ends), then the lower edge back.
        bx, by, _ = _brow_curve(p, side, np.linspace(0.0, 1.0, 5))
        lx, ly, half = _brow_curve(p, side, np.linspace(0.1, 0.9, 5))
        upper, lower = np.argsort(bx), np.argsort(lx)[::-1]
        upper_y = by[upper] + np.array([0.0, 1.0, 1.0, 1.0, 0.0]) * _brow_curve(p, side, np.linspace(0, 1, 5))[2][upper]
        points += list(zip(bx[upper], upper_y)) + list(zip(lx[lower], (ly - half)[lower]))
    nw = 0.5 * p.nose_width
    sn = p.subnasale_y
    points += [(0.0, p.nasion_y), (-p.bridge_width, 0.5 * p.nasion_y), (-0.7 * nw, sn + 9.0), (-nw, sn + 4.0),
               (-0.5 * nw, sn + 0.5), (0.0, sn), (0.5 * nw, sn + 0.5), (nw, sn + 4.0), (0.7 * nw, sn + 9.0),
               (p.bridge_width, 0.5 * p.nasion_y), (0.0, 0.0), (0.0, 0.55 * p.nasion_y)]
    half_mouth = 0.5 * p.mouth_width
    outer_x = np.array([-1.0, -0.66, -0.3, 0.0, 0.3, 0.66, 1.0, 0.66, 0.3, 0.0, -0.3, -0.66]) * half_mouth
    upper, lower, corner = _lip_curves(p, outer_x)
    outer_y = np.where(np.arange(12) <= 6, upper, lower)
    outer_y[[0, 6]] = corner[[0, 6]]
    points += list(zip(outer_x, outer_y))
    inner_x = np.array([-0.85, -0.4, 0.0, 0.4, 0.85, 0.4, 0.0, -0.4]) * half_mouth
    _, _, inner_corner = _lip_curves(p, inner_x)
    lip_offset = 2.5 * _MOUTH_GAP_TAU  # just above / below the lip-parting line, so open lips separate
    inner_y = np.where(np.arange(8) <= 4, inner_corner + lip_offset, inner_corner - lip_offset)
    inner_y[[0, 4]] = inner_corner[[0, 4]]
    points += list(zip(inner_x, inner_y))
    contour_y = p.chin_y + (p.eye_y - p.chin_y) * np.array([1.0, 0.8, 0.62, 0.46, 0.32, 0.2, 0.1])
    contour_half = p.outline_at(contour_y) * 0.97
    points += list(zip(-contour_half, contour_y)) + [(0.0, p.chin_y + 1.0)]
    points += list(zip(contour_half[::-1], contour_y[::-1]))
    return np.asarray(points, dtype=np.float64)


@dataclass
class Nuisance:
    """Scanner and session variation applied to every scan (see the field comments for units).

    The fields after `landmark_noise_mm` make a harder evaluation setting (`NUISANCE_PRESETS["hard"]`) and a varied
    population for pretraining (`NUISANCE_PRESETS["pretrain"]`: the fields from `shape_spread` on); they are off by
    default, and then the generator's output is exactly what it was before they existed.
    """

    noise_mm: float = 0.15  # Gaussian depth noise of the scanner (xy noise is a third of it)
    holes: tuple[int, int] = (0, 3)  # min and max number of small holes (vertices removed)
    hole_radius_mm: tuple[float, float] = (1.5, 4.0)
    pose_deg: tuple[float, float, float] = (4.0, 4.0, 2.0)  # max |yaw|, |pitch|, |roll|
    translate_mm: float = 3.0
    au_jitter: float = 0.1  # relative jitter of each AU amplitude per scan
    au_leak: float = 0.1  # max activation of up to two random other AUs per scan
    asymmetry: float = 0.08  # max left/right amplitude imbalance per scan
    lighting: float = 0.07  # max relative brightness change of the texture per scan
    landmark_noise_mm: float = 0.4  # manual annotation error
    style_weight: float = 0.0  # per-subject expression style: each prototype AU of an expression is scaled by a
    #   factor drawn once per (subject, expression) from [1 - style_weight, 1 + style_weight]
    style_coactivation: float = 0.0  # per-subject style: up to `style_extra_aus` other AUs co-activate with an
    #   expression at a share drawn once per (subject, expression) from [0, style_coactivation] of its amount
    style_extra_aus: int = 2
    subject_asymmetry: float = 0.0  # per-subject left/right bias in [-x, x], added to the per-scan draw
    movement_prob: float = 0.0  # chance that a scan also shows a movement that is no expression (see MOVEMENTS)
    movement_amount: tuple[float, float] = (0.5, 1.0)  # range of the movement's strength
    shape_spread: float = 0.0  # per-subject face shape: widen every geometry range by this share of its half-width
    #   on each side (see `sample_subject`), for a wider population of identities
    texture_spread: float = 0.0  # per-subject appearance: widen the skin-tone range, add albedo variation
    vertex_range: tuple[float, float] = (1.0, 1.0)  # per-subject mesh density: `vertices` times a factor drawn
    #   from this range (a scanner's resolution)
    remesh_prob: float = 0.0  # chance that a subject's mesh is irregular: grid points moved at random by up to
    #   `REMESH_JITTER` of a grid step and re-triangulated (Delaunay), another vertex layout and topology
    decimate_prob: float = 0.0  # chance that a mesh scan (BU-3DFE layout) is decimated ...
    decimate_keep: tuple[float, float] = (0.4, 1.0)  # ... to a share of its vertices drawn from this range
    #   (`facet_vlm.geometry.perturb.decimate`: random vertices kept, re-triangulated)
    ripple_mm: float = 0.0  # structured scanner noise: a depth ripple in the scanner's frame (stripes of 8-30 mm
    #   period, random direction and phase) of amplitude up to this per scan (mesh and range image)
    light_deg: float = 0.0  # per-scan lighting direction: the texture is relit by a light up to this many degrees
    #   off the frontal one (shading from the subject's neutral geometry)
    white_balance: float = 0.0  # per-scan colour cast: each channel's gain in [1 - x, 1 + x]

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if np.any(np.asarray(value) < 0):
                raise ConfigError(f"Nuisance.{item.name} must be non-negative, got {value!r}")
        if self.movement_prob > 1:
            raise ConfigError(f"Nuisance.movement_prob must be a probability in [0, 1], got {self.movement_prob}")
        if self.style_weight > 1:
            raise ConfigError(f"Nuisance.style_weight must lie in [0, 1] (a factor 1 +- it), got {self.style_weight}")
        for name in ("remesh_prob", "decimate_prob"):
            if getattr(self, name) > 1:
                raise ConfigError(f"Nuisance.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 < self.decimate_keep[0] <= self.decimate_keep[1] <= 1:
            raise ConfigError(f"Nuisance.decimate_keep must be a range inside (0, 1], got {self.decimate_keep}")
        if not 0 < self.vertex_range[0] <= self.vertex_range[1]:
            raise ConfigError(f"Nuisance.vertex_range must be a positive range (low <= high), got {self.vertex_range}")
        if self.white_balance >= 1 or self.light_deg >= 90:
            raise ConfigError(f"Nuisance.white_balance must be < 1 and light_deg < 90, got {self.white_balance}, "
                              f"{self.light_deg}")

    @property
    def has_style(self) -> bool:
        """Whether expressions vary per subject (`subject_style` draws anything)."""
        return self.style_weight > 0 or self.style_coactivation > 0

    @classmethod
    def preset(cls, name: str, **overrides) -> Nuisance:
        """A named setting of `NUISANCE_PRESETS` ("default", "hard", "pretrain") with some fields replaced."""
        if name not in NUISANCE_PRESETS:
            raise ConfigError(f"unknown nuisance preset {name!r}; known: {', '.join(NUISANCE_PRESETS)}")
        unknown = sorted(set(overrides) - {item.name for item in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown Nuisance fields {unknown}")
        settings = {item.name: getattr(NUISANCE_PRESETS[name], item.name) for item in fields(cls)}
        return cls(**{**settings, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})


#: Movements that are no expression, added to a scan's activations with probability `Nuisance.movement_prob`:
#: talking (jaw and lips part), a blink (AU45: the lids close; texture and eye landmarks only), pressing the lips,
#: squinting, a conversational brow raise. Each overlaps the AUs of some expression, so it cannot be told apart by
#: which region moves. Amounts are those at movement strength 1.
MOVEMENTS: dict[str, dict[int, float]] = {
    "talking": {26: 0.45, 16: 0.3},
    "blink": {45: 1.0},
    "lip_press": {23: 0.6},
    "squint": {7: 0.6},
    "brow_raise": {1: 0.4, 2: 0.4},
}

#: Named nuisance settings. "hard" is the evaluation setting of issue 17: per-subject expression styles (AU weights
#: +-60 %, up to two co-activated AUs at up to 40 %), strong per-scan and per-subject asymmetry, non-expression
#: movements in 60 % of the scans, +-12 degree yaw/pitch (6 roll), 3x the scanner noise, more and larger holes,
#: 2x the AU jitter and leak and of lighting change, 2x the landmark error. The amounts are our choice (no data set
#: publishes them); `Nuisance.preset("hard", asymmetry=0.4, ...)` varies them.
#: "pretrain" is meant for pretraining populations (issue 12): every kind of variation a real population and its
#: scanners show, each drawn from a range wider than the default's: face shape (ranges widened by 0.6) and
#: appearance, mesh density (0.5-1.5x the vertices), irregular meshes for half of the subjects, decimation of half of
#: the scans (to 35-90 % of the vertices), holes, scanner noise with ripples, +-15/12/8 degree pose, relighting and
#: colour casts, per-subject expression styles and asymmetry, movements that are no expression in 30 % of the scans.
#: The amounts are our choice; it is not the hard evaluation setting (a model pretrained on it is tested elsewhere).
NUISANCE_PRESETS: dict[str, Nuisance] = {
    "default": Nuisance(),
    "hard": Nuisance(noise_mm=0.45, holes=(2, 8), hole_radius_mm=(2.0, 8.0), pose_deg=(12.0, 12.0, 6.0),
                     translate_mm=5.0, au_jitter=0.2, au_leak=0.2, asymmetry=0.3, lighting=0.15,
                     landmark_noise_mm=0.8, style_weight=0.6, style_coactivation=0.4, style_extra_aus=2,
                     subject_asymmetry=0.2, movement_prob=0.6, movement_amount=(0.5, 1.0)),
    "pretrain": Nuisance(noise_mm=0.3, holes=(0, 6), hole_radius_mm=(1.5, 8.0), pose_deg=(15.0, 12.0, 8.0),
                         translate_mm=5.0, au_jitter=0.2, au_leak=0.15, asymmetry=0.25, lighting=0.2,
                         landmark_noise_mm=0.8, style_weight=0.5, style_coactivation=0.35, style_extra_aus=2,
                         subject_asymmetry=0.15, movement_prob=0.3, movement_amount=(0.3, 1.0), shape_spread=0.6,
                         texture_spread=1.0, vertex_range=(0.5, 1.5), remesh_prob=0.5, decimate_prob=0.5,
                         decimate_keep=(0.35, 0.9), ripple_mm=0.3, light_deg=35.0, white_balance=0.08),
}


def expression_activations(expression: str, amount: float) -> dict[int, float]:
    """AU activations of a prototypical expression at `amount` (0 neutral .. 1 apex)."""
    if expression not in EXPRESSION_AUS:
        raise ConfigError(f"unknown expression {expression!r}; known: {', '.join(EXPRESSION_AUS)}")
    return {au: float(amount) for au in EXPRESSION_AUS[expression]}


def jitter_activations(acts: dict[int, float], rng: np.random.Generator, nuisance: Nuisance) -> dict[int, float]:
    """Per-scan variation of an expression: each AU a little stronger or weaker, plus faint unrelated AUs."""
    out = {au: amount * float(rng.uniform(1.0 - nuisance.au_jitter, 1.0 + nuisance.au_jitter))
           for au, amount in acts.items()}
    others = [au for au in ACTION_UNITS if au not in acts]
    for au in rng.choice(others, size=min(2, len(others)), replace=False):
        out[int(au)] = out.get(int(au), 0.0) + float(rng.uniform(0.0, nuisance.au_leak))
    return out


def subject_style(expression: str, rng: np.random.Generator, nuisance: Nuisance) -> dict[int, float]:
    """How one subject shows `expression`: a weight per AU (multiplying the activation amount), drawn once per
    (subject, expression) from `rng`. Prototype AUs get 1 +- `style_weight`; up to `style_extra_aus` other AUs
    co-activate with a weight up to `style_coactivation`. Empty for neutral."""
    prototype = EXPRESSION_AUS[expression]
    if not prototype:
        return {}
    weights = {au: float(rng.uniform(1.0 - nuisance.style_weight, 1.0 + nuisance.style_weight)) for au in prototype}
    others = [au for au in ACTION_UNITS if au not in prototype]
    count = int(rng.integers(0, nuisance.style_extra_aus + 1))
    for au in rng.choice(others, size=min(count, len(others)), replace=False):
        weights[int(au)] = float(rng.uniform(0.0, nuisance.style_coactivation))
    return weights


def styled_activations(expression: str, amount: float, style: dict[int, float]) -> dict[int, float]:
    """AU activations of `expression` at `amount` under a subject's `style` (see `subject_style`); the prototype
    without one."""
    if not style:
        return expression_activations(expression, amount)
    return {au: float(amount) * weight for au, weight in style.items()}


def add_movement(acts: dict[int, float], rng: np.random.Generator, nuisance: Nuisance) -> tuple[dict[int, float], str]:
    """With probability `movement_prob`, add one random movement of `MOVEMENTS` (strength in `movement_amount`)
    to the activations (per AU the larger of the two); returns the activations and the movement's name or ""."""
    if nuisance.movement_prob <= 0 or rng.random() >= nuisance.movement_prob:
        return acts, ""
    names = list(MOVEMENTS)
    name = names[int(rng.integers(len(names)))]
    strength = float(rng.uniform(*nuisance.movement_amount))
    out = dict(acts)
    for au, value in MOVEMENTS[name].items():
        out[au] = max(out.get(au, 0.0), value * strength)
    return out, name


@dataclass
class SyntheticScan:
    """One generated scan: the mesh and its range-image form (grid with NaN background, as in Bosphorus)."""

    face: Face
    xyz_grid: np.ndarray  # (rows, cols, 3) float32, NaN where there is no surface
    uv_grid: np.ndarray  # (rows, cols, 2) float32, NaN where there is no surface


class FaceModel:
    """One synthetic subject: a precomputed grid, neutral surface and texture, producing scans on demand.

    Args:
        params: the subject (see `sample_subject`).
        vertices: approximate number of mesh vertices (real BU-3DFE F3D scans have a few thousand).
        texture_size: side of the square texture image in pixels.
        seed: seeds the subject's texture details (skin noise, brow hairs).
        remesh: move the grid points at random by up to `REMESH_JITTER` of a grid step and triangulate them anew
            (Delaunay in x, y): an irregular mesh with another vertex layout and topology. The range-image form keeps
            one point per grid cell.
    """

    def __init__(self, params: SubjectParams, vertices: int = 6000, texture_size: int = 512, seed: int = 0,
                 remesh: bool = False):
        if vertices < 200:
            raise ConfigError(f"vertices must be at least 200, got {vertices}")
        if texture_size < 32:
            raise ConfigError(f"texture_size must be at least 32, got {texture_size}")
        self.params = p = params
        self.texture_size = texture_size
        self.x0, self.x1 = -p.half_width, p.half_width
        self.y0, self.y1 = p.chin_y, p.top_y
        # Grid step chosen so that the outline holds about `vertices` points.
        probe_y = np.linspace(self.y0, self.y1, 200)
        area = float(np.trapezoid(2.0 * p.outline_at(probe_y), probe_y))
        step = np.sqrt(area / vertices)
        cols = int(np.ceil((self.x1 - self.x0) / step)) + 1
        rows = int(np.ceil((self.y1 - self.y0) / step)) + 1
        xs = np.linspace(self.x0, self.x1, cols)
        ys = np.linspace(self.y1, self.y0, rows)  # row 0 at the top, as in a range image
        self.grid_x, self.grid_y = np.meshgrid(xs, ys)
        if remesh:
            jitter = np.random.default_rng([seed, 1]).uniform(-REMESH_JITTER, REMESH_JITTER, (2,) + self.grid_x.shape)
            self.grid_x = self.grid_x + jitter[0] * (xs[1] - xs[0])
            self.grid_y = self.grid_y + jitter[1] * (ys[0] - ys[1])
        self.mask = np.abs(self.grid_x) <= p.outline_at(self.grid_y)
        self.grid_z = base_depth(p, self.grid_x, self.grid_y)
        self.index = np.full(self.mask.shape, -1, dtype=np.int64)
        self.index[self.mask] = np.arange(int(self.mask.sum()))
        if remesh:
            self.faces = _delaunay_triangles(self.grid_x[self.mask], self.grid_y[self.mask], 2.5 * step)
        else:
            self.faces = _grid_triangles(self.index)
        self.uv = np.stack([(self.grid_x[self.mask] - self.x0) / (self.x1 - self.x0),
                            (self.grid_y[self.mask] - self.y0) / (self.y1 - self.y0)], axis=-1).astype(np.float32)
        self.texture = _subject_texture(self, np.random.default_rng(seed))

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @cached_property
    def surface_slopes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dz/dx, dz/dy and sqrt(1 + both squared) of the neutral face on a coarse 64 x 64 texture-aligned grid."""
        coarse = 64
        cx, cy = np.meshgrid(np.linspace(self.x0, self.x1, coarse), np.linspace(self.y1, self.y0, coarse))
        dz_dy, dz_dx = np.gradient(base_depth(self.params, cx, cy), -(self.y1 - self.y0) / (coarse - 1),
                                   (self.x1 - self.x0) / (coarse - 1))
        return dz_dx, dz_dy, np.sqrt(1.0 + dz_dx ** 2 + dz_dy ** 2)

    def texel_grid(self, x_range: tuple[float, float], y_range: tuple[float, float]):
        """Texture window covering a parametric box: (row slice, col slice, X, Y) with texel-centre coordinates."""
        size = self.texture_size
        sx = (self.x1 - self.x0) / size
        sy = (self.y1 - self.y0) / size
        c0 = int(np.clip(np.floor((x_range[0] - self.x0) / sx), 0, size))
        c1 = int(np.clip(np.ceil((x_range[1] - self.x0) / sx), 0, size))
        r0 = int(np.clip(np.floor((self.y1 - y_range[1]) / sy), 0, size))
        r1 = int(np.clip(np.ceil((self.y1 - y_range[0]) / sy), 0, size))
        xs = self.x0 + (np.arange(c0, c1) + 0.5) * sx
        ys = self.y1 - (np.arange(r0, r1) + 0.5) * sy
        grid_x, grid_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        return slice(r0, r1), slice(c0, c1), grid_x, grid_y

    def surface(self, x: np.ndarray, y: np.ndarray, acts: dict[int, float], asymmetry: float = 0.0) -> np.ndarray:
        """3D positions (N, 3) of parametric skin points under AU activations (before pose and noise)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        base = np.stack([x, y, base_depth(self.params, x, y)], axis=-1)
        return base + au_displacement(self.params, acts, x, y, asymmetry)

    def scan(self, acts: dict[int, float], rng: np.random.Generator, nuisance: Nuisance | None = None,
             pose: np.ndarray | None = None, asymmetry: float | None = None,
             meta: dict | None = None, deform: Callable[[np.ndarray], np.ndarray] | None = None,
             landmarks: np.ndarray | None = None, landmark_names: list[str] | None = None) -> SyntheticScan:
        """Generate one scan under AU activations ``{au: 0..1}`` (already jittered, see `jitter_activations`).

        `pose` (3x4 rigid transform) and `asymmetry` override their random per-scan draws, e.g. to keep them smooth
        along a sequence. `deform` maps the surface points (N, 3) after the AU displacement and before pose and
        noise (e.g. a landmark-driven warp); `landmarks` (L, 3, in the same frame, after `deform`) and
        `landmark_names` then replace the generator's own landmarks (`facet_vlm.data.calibrate.calibrated_scan`).
        """
        nuisance = nuisance or Nuisance()
        p = self.params
        if asymmetry is None:
            asymmetry = float(rng.uniform(-nuisance.asymmetry, nuisance.asymmetry))
        gx, gy = self.grid_x[self.mask], self.grid_y[self.mask]
        base = np.stack([gx, gy, self.grid_z[self.mask]], axis=-1)
        points = base + au_displacement(p, acts, gx, gy, asymmetry)
        if deform is not None:
            points = deform(points)
        if landmarks is None:
            marks_xy = landmarks_2d(p, acts)
            marks = self.surface(marks_xy[:, 0], marks_xy[:, 1], acts, asymmetry)
        else:
            marks = np.asarray(landmarks, dtype=np.float64)
        marks = marks + rng.normal(0.0, nuisance.landmark_noise_mm, marks.shape)
        if pose is None:
            pose = random_pose(rng, nuisance, center=(0.0, p.eye_y - 10.0, -80.0))
        points = points @ pose[:, :3].T + pose[:, 3]
        marks = marks @ pose[:, :3].T + pose[:, 3]
        points += rng.normal(0.0, 1.0, points.shape) * (nuisance.noise_mm * np.array([1 / 3, 1 / 3, 1.0]))
        keep = np.ones(len(points), dtype=bool)
        for _ in range(int(rng.integers(nuisance.holes[0], nuisance.holes[1] + 1))):
            centre = base[rng.integers(len(base)), :2]
            radius = rng.uniform(*nuisance.hole_radius_mm)
            keep &= np.sum((base[:, :2] - centre) ** 2, axis=1) > radius ** 2
        faces = self.faces[np.all(keep[self.faces], axis=1)]
        used = np.zeros(len(points), dtype=bool)
        used[faces.ravel()] = True
        remap = np.cumsum(used) - 1
        texture = _scan_texture(self, acts, rng, nuisance)
        if landmarks is None:
            names = BND_NAMES + list(STANDARD_LANDMARKS)
            marks = np.concatenate([marks, marks[[BND_STANDARD_INDEX[name] for name in STANDARD_LANDMARKS]]])
        else:
            names = list(landmark_names) if landmark_names is not None else [f"p{i:02d}" for i in range(len(marks))]
        face = Face(vertices=points[used], faces=remap[faces], uv=self.uv[used], texture=texture,
                    landmarks=marks, landmark_names=names, meta=dict(meta or {}))
        xyz_grid = np.full(self.shape + (3,), np.nan, dtype=np.float32)
        uv_grid = np.full(self.shape + (2,), np.nan, dtype=np.float32)
        rows, cols = np.nonzero(self.mask)
        xyz_grid[rows[used], cols[used]] = points[used]
        uv_grid[rows[used], cols[used]] = self.uv[used]
        return SyntheticScan(face=face, xyz_grid=xyz_grid, uv_grid=uv_grid)


def ripple(rng: np.random.Generator, xy: np.ndarray, amplitude: float) -> np.ndarray:
    """Depth ripple (mm) at scanner (x, y) points: stripes of 8-30 mm period, random direction, phase and amplitude
    up to `amplitude` (structured scanner noise, `Nuisance.ripple_mm`)."""
    angle, period, phase = rng.uniform(0.0, np.pi), rng.uniform(8.0, 30.0), rng.uniform(0.0, 2.0 * np.pi)
    along = xy[:, 0] * np.cos(angle) + xy[:, 1] * np.sin(angle)
    return rng.uniform(0.0, amplitude) * np.sin(2.0 * np.pi * along / period + phase)


def random_pose(rng: np.random.Generator, nuisance: Nuisance, center=(0.0, 0.0, -80.0)) -> np.ndarray:
    """A small random rigid motion (3x4) rotating about `center` (behind the face, near the head's centre)."""
    yaw, pitch, roll = np.radians(rng.uniform(-1.0, 1.0, 3) * np.asarray(nuisance.pose_deg))
    translation = rng.uniform(-1.0, 1.0, 3) * nuisance.translate_mm
    return pose_matrix(yaw, pitch, roll, translation, center)


def pose_matrix(yaw: float, pitch: float, roll: float, translation, center) -> np.ndarray:
    """Rigid transform (3x4): rotate by yaw (about y), pitch (about x), roll (about z) around `center`, then move."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rot_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    rotation = rot_z @ rot_x @ rot_y
    center = np.asarray(center, dtype=np.float64)
    offset = center - rotation @ center + np.asarray(translation, dtype=np.float64)
    return np.concatenate([rotation, offset[:, None]], axis=1)


def _grid_triangles(index: np.ndarray) -> np.ndarray:
    """Two counter-clockwise (seen from +z) triangles per grid cell, keeping those whose corners are all valid."""
    a, b = index[:-1, :-1], index[1:, :-1]  # top-left, bottom-left
    c, d = index[:-1, 1:], index[1:, 1:]  # top-right, bottom-right
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return tris[np.all(tris >= 0, axis=1)]


def _delaunay_triangles(x: np.ndarray, y: np.ndarray, max_edge: float) -> np.ndarray:
    """Counter-clockwise (seen from +z) Delaunay triangles of points (x, y), without those with an edge longer than
    `max_edge` (they would bridge the concave outline)."""
    from scipy.spatial import Delaunay

    points = np.stack([x, y], axis=-1)
    tris = Delaunay(points).simplices.astype(np.int64)
    corners = points[tris]
    edges = np.linalg.norm(corners[:, [1, 2, 0]] - corners, axis=-1)
    tris = tris[edges.max(axis=1) <= max_edge]
    a, b, c = (points[tris[:, k]] for k in range(3))
    clockwise = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]) < 0
    tris[clockwise] = tris[clockwise][:, [0, 2, 1]]
    return tris


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with features about size/cells texels wide."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _blend(image: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    return image * (1.0 - alpha) + np.asarray(colour, dtype=np.float32) * alpha


def _subject_texture(model: FaceModel, rng: np.random.Generator) -> np.ndarray:
    """Neutral texture (uint8 (S, S, 3)): skin tone with blotches and pores, soft frontal shading,
    darker eye surroundings, lips, brows, nostrils, hairline and (for some men) stubble. Eyes are painted per scan."""
    p = model.params
    size = model.texture_size
    _, _, x, y = model.texel_grid((model.x0, model.x1), (model.y0, model.y1))
    ax = np.abs(x)
    # Shading from the neutral geometry, computed on a coarse grid (it is smooth) and upsampled.
    coarse = 128
    cx, cy = np.meshgrid(np.linspace(model.x0, model.x1, coarse), np.linspace(model.y1, model.y0, coarse))
    dz_dy, dz_dx = np.gradient(base_depth(p, cx, cy), -(model.y1 - model.y0) / (coarse - 1),
                               (model.x1 - model.x0) / (coarse - 1))
    normal_z = 1.0 / np.sqrt(1.0 + dz_dx ** 2 + dz_dy ** 2)
    light = normal_z * (0.95 - 0.3 * dz_dy * normal_z)  # frontal light slightly from above
    shade = cv2.resize((0.72 + 0.28 * np.clip(light, 0.0, 1.0)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    blotch = 1.0 + 0.045 * _smooth_noise(rng, size, 10) + 0.02 * _smooth_noise(rng, size, 40)
    pores = 1.0 + 0.025 * rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    skin = np.asarray(p.skin_rgb, dtype=np.float32)
    image = np.broadcast_to(skin, (size, size, 3)) * (blotch * pores)[..., None]
    redness = _g(ax, y, 38.0, p.eye_y - 28.0, 14.0, 12.0) + 0.6 * _g(x, y, 0.0, 0.0, 8.0, 7.0)
    image = image * (1.0 + 0.07 * redness[..., None] * np.array([1.0, -0.35, -0.3], dtype=np.float32))
    image = image * (1.0 - 0.1 * _g(ax, y, p.eye_x, p.eye_y, 13.0, 8.0))[..., None]
    # Lips.
    upper, lower, _ = _lip_curves(p, x)
    inside = np.minimum(upper - y, y - lower)
    lips = _sigmoid(inside / 0.5) * (ax < 0.5 * p.mouth_width)
    image = _blend(image, skin * p.lip_tint, 0.85 * lips)
    # Stubble (before the brows and hair).
    if p.stubble > 0:
        jaw = _sigmoid((p.subnasale_y - 3.0 - y) / 2.0) * (1.0 - 0.9 * lips) * _sigmoid(
            (0.9 * p.half_width_at(y) - ax) / 4.0)
        jaw = jaw * (1.0 - _g(ax, y, 38.0, p.eye_y - 26.0, 14.0, 10.0))
        grain = np.clip(0.6 + 0.8 * rng.random((size, size)).astype(np.float32), 0.0, 1.0)
        image = _blend(image, p.hair_rgb, 0.35 * p.stubble * jaw * grain)
    # Brows: a band along the brow curve with streaky hair noise.
    hairs = cv2.blur(rng.random((size, size)).astype(np.float32), (7, 1))
    for side in (-1.0, 1.0):
        t = np.clip((ax - (p.eye_x - 0.5 * p.eye_width - 1.0)) / (p.eye_width + 7.0), -0.1, 1.1)
        _, by, half = _brow_curve(p, side, t)
        along = _sigmoid((t + 0.02) / 0.01) * _sigmoid((1.02 - t) / 0.015) * (np.sign(x) == side)
        band = _sigmoid((half - np.abs(y - by)) / 0.6) * along
        image = _blend(image, p.hair_rgb, p.brow_density * band * (0.55 + 0.6 * hairs))
    # Nostrils, visible as dark crescents just above the subnasale.
    nostrils = _g(ax, y, 0.22 * p.nose_width, p.subnasale_y + 2.0, 3.0, 1.3)
    image = image * (1.0 - 0.45 * nostrils)[..., None]
    # Hairline.
    hairline = p.hairline_y - 12.0 * (x / p.half_width) ** 2
    hair = _sigmoid((y - hairline) / 1.5) * (0.8 + 0.4 * _smooth_noise(rng, size, 60))
    image = _blend(image, p.hair_rgb, hair)
    return _to_uint8(image * shade[..., None])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _darken(image: np.ndarray, rows: slice, cols: slice, alpha: np.ndarray, strength: float) -> None:
    window = image[rows, cols].astype(np.float32) / 255.0
    image[rows, cols] = _to_uint8(window * (1.0 - strength * np.clip(alpha, 0.0, 1.0))[..., None])


def _scan_texture(model: FaceModel, acts: dict[int, float], rng: np.random.Generator,
                  nuisance: Nuisance) -> np.ndarray:
    """Per-scan texture (uint8): the subject's texture plus eyes (aperture set by AU5/6/7), wrinkles of the active
    AUs, the dark mouth interior with teeth where the lips part, and a small lighting change."""
    p = model.params
    image = model.texture.copy()
    amount = {au: _amount(p, acts, au) for au in ACTION_UNITS}
    openness = eye_openness(acts, p)
    gaze = rng.normal(0.0, 0.8, 2)
    for side in (-1.0, 1.0):
        cx = side * p.eye_x
        rows, cols, x, y = model.texel_grid((cx - 0.5 * p.eye_width - 2.0, cx + 0.5 * p.eye_width + 2.0),
                                            (p.eye_y - 10.0, p.eye_y + 14.0))
        t = (x - cx) / (0.5 * p.eye_width)
        upper, lower = _eye_curves(p, side, t, openness)
        aperture = _sigmoid(np.minimum(upper - y, y - lower) / 0.25) * (np.abs(t) < 1.0)
        window = image[rows, cols].astype(np.float32) / 255.0
        corner_shade = 1.0 - 0.25 * np.abs(t) ** 3
        sclera = np.array([0.93, 0.9, 0.86], dtype=np.float32) * corner_shade[..., None]
        r = np.hypot(x - cx - gaze[0], y - p.eye_y - 0.3 * gaze[1])
        iris = _sigmoid((5.8 - r) / 0.3)
        pupil = _sigmoid((2.2 - r) / 0.25)
        eye = _blend(sclera, p.iris_rgb, iris)
        eye = _blend(eye, (0.03, 0.03, 0.03), pupil)
        eye = _blend(eye, (1.0, 1.0, 1.0), 0.8 * _g(x, y, cx + gaze[0] + 1.8, p.eye_y + 1.8, 0.6, 0.6))
        window = window * (1.0 - aperture[..., None]) + eye * aperture[..., None]
        lash = np.exp(-0.5 * ((y - upper) / 0.45) ** 2) * (np.abs(t) < 1.05)
        crease = np.exp(-0.5 * ((y - upper - 3.0) / 0.8) ** 2) * (np.abs(t) < 0.9)
        window *= (1.0 - 0.75 * lash - 0.12 * crease)[..., None]
        image[rows, cols] = _to_uint8(window)
    # Wrinkles appear with the AUs that bunch the skin.
    if amount[1] + amount[2] > 0.1:
        rows, cols, x, y = model.texel_grid((-50.0, 50.0), (p.brow_y + 6.0, p.brow_y + 34.0))
        lines = sum(np.exp(-0.5 * ((y - p.brow_y - off - 3.0 * (1.0 - (x / 45.0) ** 2)) / 0.6) ** 2)
                    for off in (11.0, 17.0, 23.0))
        spread = amount[1] * np.exp(-0.5 * (x / 22.0) ** 2) + amount[2] * _g(np.abs(x), 0.0, 30.0, 0.0, 14.0, 1.0)
        _darken(image, rows, cols, lines * spread, 0.3)
    if amount[4] > 0.05:
        rows, cols, x, y = model.texel_grid((-10.0, 10.0), (p.brow_y - 6.0, p.brow_y + 14.0))
        lines = np.exp(-0.5 * ((np.abs(x) - 4.5) / 0.6) ** 2) * _g(0.0, y, 0.0, p.brow_y + 3.0, 1.0, 6.0)
        _darken(image, rows, cols, lines * amount[4], 0.35)
    if amount[6] > 0.05:
        for side in (-1.0, 1.0):
            ox = side * (p.eye_x + 0.5 * p.eye_width)
            rows, cols, x, y = model.texel_grid((ox - 16.0, ox + 16.0), (p.eye_y - 14.0, p.eye_y + 12.0))
            dx, dy = (x - ox) * side, y - p.eye_y
            r, angle = np.hypot(dx, dy), np.arctan2(dy, np.maximum(dx, 1e-3))
            rays = np.cos(angle * 9.0) ** 16 * (dx > 0) * _sigmoid((r - 4.0) / 1.0) * _sigmoid((14.0 - r) / 1.5)
            _darken(image, rows, cols, rays * amount[6], 0.18)
    if amount[9] > 0.05:
        rows, cols, x, y = model.texel_grid((-14.0, 14.0), (p.nasion_y - 22.0, p.nasion_y))
        lines = sum(np.exp(-0.5 * ((y - p.nasion_y + off + 0.08 * x * x) / 0.6) ** 2) for off in (8.0, 12.0, 16.0))
        _darken(image, rows, cols, lines * np.exp(-0.5 * (x / 8.0) ** 2) * amount[9], 0.4)
    fold = 0.1 + 0.35 * max(amount[12], amount[9], 0.6 * amount[6])
    rows, cols, x, y = model.texel_grid((-p.mouth_width, p.mouth_width), (p.mouth_y - 12.0, p.subnasale_y + 8.0))
    _darken(image, rows, cols, _nasolabial(p, x, y), fold)
    # Mouth interior where the lips part: the parting line is stretched open by the gap (see `au_displacement`).
    half_mouth = 0.5 * p.mouth_width
    rows, cols, x, y = model.texel_grid((-half_mouth, half_mouth), (p.mouth_y - 5.0, p.mouth_y + 5.0))
    gap = mouth_gap(p, acts, x)
    position = _sigmoid((p.mouth_y - y) / _MOUTH_GAP_TAU)  # 0 on the upper lip side, 1 on the lower
    stretch = gap * position * (1.0 - position) / _MOUTH_GAP_TAU
    interior = np.clip((stretch - 0.6) / 0.8, 0.0, 1.0)
    if interior.any():
        window = image[rows, cols].astype(np.float32) / 255.0
        cavity = np.array([0.22, 0.07, 0.08], dtype=np.float32)
        teeth = np.clip((0.32 - position) / 0.08, 0.0, 1.0) * np.clip((gap - 3.0) / 2.0, 0.0, 1.0)
        teeth = np.maximum(teeth, 0.7 * np.clip((position - 0.88) / 0.05, 0.0, 1.0) * (gap > 6.0))
        inside = _blend(np.broadcast_to(cavity, window.shape), (0.88, 0.86, 0.78), teeth)
        image[rows, cols] = _to_uint8(window * (1.0 - interior[..., None]) + inside * interior[..., None])
    gain = 1.0 + rng.uniform(-nuisance.lighting, nuisance.lighting) + rng.normal(0.0, 0.01, 3)
    if nuisance.white_balance > 0:
        gain = gain * rng.uniform(1.0 - nuisance.white_balance, 1.0 + nuisance.white_balance, 3)
    levels = np.arange(256, dtype=np.float32)[:, None] * gain[None, :]
    table = np.clip(levels + 0.5, 0, 255).astype(np.uint8)  # (256, 3): one lookup table per channel
    image = cv2.LUT(image, table.reshape(256, 1, 3))
    if nuisance.light_deg > 0:
        image = _relight(model, image, rng, nuisance.light_deg)
    return image


def _relight(model: FaceModel, image: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """The texture lit from a random direction up to `max_deg` off the frontal light instead of from the front:
    multiplied by the ratio of the two Lambertian shadings of the subject's neutral geometry (computed on a coarse
    grid, it is smooth, and upsampled to the texture)."""
    tilt, turn = np.radians(rng.uniform(0.0, max_deg)), rng.uniform(0.0, 2.0 * np.pi)
    dz_dx, dz_dy, norm = model.surface_slopes
    shading = 0.35 + 0.65 * np.clip((-dz_dx * np.sin(tilt) * np.cos(turn) - dz_dy * np.sin(tilt) * np.sin(turn)
                                     + np.cos(tilt)) / norm, 0.0, 1.0)
    frontal = 0.35 + 0.65 * np.clip(1.0 / norm, 0.0, 1.0)
    size = model.texture_size
    ratio = cv2.resize((shading / frontal).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return _to_uint8(image.astype(np.float32) / 255.0 * ratio[..., None])
