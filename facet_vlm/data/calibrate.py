"""The generator's expression model calibrated on real 3D landmark motion (BU-4DFE's landmark release).

`MotionCalibration.fit` summarises real sequences (`facet_vlm.geometry.motion.LandmarkMotion`, in the canonical
frame, divided by the inter-ocular distance) per expression:

- the displacement field of the apex (mean motion of the 83 points from the neutral face);
- how it varies between people: the leading principal components of the left/right-symmetric part of the apex
  motion with their spreads (standard deviations between people), and the standard deviation of what they leave;
- asymmetry: the standard deviation, per point and axis, of the antisymmetric part (motion minus its mirror image,
  halved), i.e. how differently people move the two sides of the face;
- co-activations: each real apex refitted by the generator's own action units (non-negative least squares on the
  landmark motion of every AU of `facet_vlm.data.face_model`, on a reference subject), with the mean and covariance
  of the activations (which AUs people use together for an expression);
- timing: the onset (first frame at `MotionOptions.onset_fraction` of the apex magnitude), apex and offset as
  fractions of the sequence, the share of the apex left at the end, and how the onset's magnitude compares with the
  apex's (BU-3DFE-like intensity 3 against 4).

Only these fitted summaries are stored (`save`, JSON): means, principal directions without any person's scores,
spreads and covariances over all subjects, and the mean neutral face. No subject's landmarks can be read back from
them. The file shipped with the library (`CALIBRATION_FILE`) was fitted on the 41 BU-4DFE development subjects (see
docs/real_motion.md).

`calibrated_scan` makes a scan of a generated subject showing a displacement field (sampled from the calibration, or
a real person's motion): the 83 points of the real layout are placed on the generated face (`generator_points`), the
motion is scaled to the face's inter-ocular distance and turned into its axes, the generator's AUs are fitted to it
(their displacement parts the lips and opens the eyes in the texture), and a thin-plate spline
(`facet_vlm.geometry.warp.ThinPlateSpline`) moves the rest so that every landmark lands where it was sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..geometry.motion import INNER, MIRROR, NUM_POINTS, LandmarkMotion, canonical_axes
from ..geometry.warp import ThinPlateSpline
from ..labels import BASIC_EXPRESSIONS
from .face_model import (
    ACTION_UNITS,
    BND_NAMES,
    STANDARD_LANDMARKS,
    FaceModel,
    Nuisance,
    SyntheticScan,
    landmarks_2d,
)

#: The calibration fitted on the 41 BU-4DFE development subjects, shipped with the library.
CALIBRATION_FILE = Path(__file__).parent / "calibration" / "bu4dfe_motion.json"
CALIBRATION_VERSION = 1
#: For each point of the real 83-point layout, the generator's landmark with the same meaning (`landmarks_2d`
#: orders the first eye and brow the other way round); -1 for the nose outline, which the generator does not have
#: and `generator_points` places from the calibration's mean neutral face.
GENERATOR_INDEX = ((4, 3, 2, 1, 0, 7, 6, 5) + tuple(range(8, 16)) + (20, 19, 18, 17, 16, 25, 24, 23, 22, 21)
                   + tuple(range(26, 36)) + (-1,) * 12 + tuple(range(48, 83)))
NOSE = tuple(range(36, 48))
#: The project's named landmarks in the real layout (the real layout has no nose tip: it is the generator's).
STANDARD_IN_REAL = {"right_eye_outer": 4, "right_eye_inner": 0, "left_eye_inner": 8, "left_eye_outer": 12,
                    "right_brow_outer": 20, "right_brow_inner": 16, "left_brow_inner": 26, "left_brow_outer": 30,
                    "mouth_right": 48, "upper_lip": 51, "mouth_left": 54, "lower_lip": 57, "chin": 75}
#: Upper bound of a fitted AU activation.
MAX_ACTIVATION = 1.5
#: Default number of principal directions of the neutral faces that `calibrated_rest` matches (see
#: `MotionCalibration.fit`): none. Matching 10 did not bring generated -> real closer on the development subjects
#: (docs/real_motion.md), so the per-point rescaling stays the default.
IDENTITY_COMPONENTS = 0
#: Default cut-off of `apex_outliers` in `MotionCalibration.fit` (the modified z-score's usual 3.5).
OUTLIER_Z = 3.5
#: Fewest sequences of an expression for which `MotionCalibration.fit` looks for outliers.
OUTLIER_MIN_SEQUENCES = 10


def mirror(displacement: np.ndarray) -> np.ndarray:
    """The mirror image of displacement fields (..., 83, 3): left and right points swapped, x negated."""
    return np.asarray(displacement)[..., list(MIRROR), :] * np.array([-1.0, 1.0, 1.0])


@dataclass
class ExpressionModel:
    """The calibrated motion of one expression (all fields normalised by the inter-ocular distance, canonical
    axes; see the module docstring).

    Attributes:
        mean: (83, 3) mean apex displacement.
        components: (k, 83, 3) principal directions of the symmetric part (unit norm).
        spreads: (k,) standard deviation between people along each direction.
        residual: standard deviation per coordinate of what the directions leave of the symmetric part.
        asymmetry: (83, 3) standard deviation of the antisymmetric part.
        onset_ratio: (mean, std) of |onset motion| / |apex motion| (mean point distances).
        activations: (len(ACTION_UNITS),) mean fitted AU activations; covariance: their covariance.
        timing: (mean, std) pairs for "onset", "apex", "offset" (fractions of the sequence) and "rest" (share of the
            apex magnitude left at the last frame), over the sequences that start at a neutral face.
        samples: number of sequences fitted.
    """

    mean: np.ndarray
    components: np.ndarray
    spreads: np.ndarray
    residual: float
    asymmetry: np.ndarray
    onset_ratio: tuple[float, float]
    activations: np.ndarray
    covariance: np.ndarray
    timing: dict[str, tuple[float, float]]
    samples: int

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One person's apex displacement (83, 3): mean + spread-weighted directions + residual + asymmetry."""
        coefficients = rng.normal(size=len(self.spreads)) * self.spreads
        symmetric = self.mean + np.tensordot(coefficients, self.components, axes=1)
        symmetric = symmetric + rng.normal(size=symmetric.shape) * self.residual
        return symmetric + rng.normal(size=symmetric.shape) * self.asymmetry

    def onset(self, rng: np.random.Generator) -> float:
        """A draw of the onset/apex magnitude ratio (intensity 3 against 4), kept inside (0.1, 1)."""
        return float(np.clip(rng.normal(*self.onset_ratio), 0.1, 1.0))

    def profile(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Expression amount (0 neutral .. 1 apex) per frame of a sequence: piecewise linear through 0 at the first
        frame, the onset fraction at the onset, 1 at the apex, the onset fraction at the offset and the rest share
        at the last frame (the calibrated timing; drawn from its spread when `rng` is given)."""
        def draw(name: str) -> float:
            mean, std = self.timing[name]
            return float(mean if rng is None else mean + std * rng.normal())

        onset, apex, offset = sorted(np.clip([draw("onset"), draw("apex"), draw("offset")], 0.02, 0.98))
        rest = float(np.clip(draw("rest"), 0.0, 1.0))
        ratio = self.onset_ratio[0]
        knots = [0.0, onset, apex, max(offset, apex + 1e-3), 1.0]
        values = [0.0, ratio, 1.0, ratio, rest]
        return np.interp(np.linspace(0.0, 1.0, num_frames), knots, values)

    def to_dict(self) -> dict:
        return {"mean": _round(self.mean), "components": _round(self.components), "spreads": _round(self.spreads),
                "residual": round(float(self.residual), 6), "asymmetry": _round(self.asymmetry),
                "onset_ratio": _round(self.onset_ratio), "activations": _round(self.activations),
                "covariance": _round(self.covariance), "timing": {k: _round(v) for k, v in self.timing.items()},
                "samples": self.samples}

    @classmethod
    def from_dict(cls, data: dict) -> ExpressionModel:
        return cls(mean=np.asarray(data["mean"], float), components=np.asarray(data["components"], float),
                   spreads=np.asarray(data["spreads"], float), residual=float(data["residual"]),
                   asymmetry=np.asarray(data["asymmetry"], float), onset_ratio=tuple(data["onset_ratio"]),
                   activations=np.asarray(data["activations"], float),
                   covariance=np.asarray(data["covariance"], float),
                   timing={k: tuple(v) for k, v in data["timing"].items()}, samples=int(data["samples"]))


def _round(values, digits: int = 5):
    return np.round(np.asarray(values, dtype=float), digits).tolist()


@dataclass
class MotionCalibration:
    """Per-expression calibrated motion (`ExpressionModel`) plus the mean neutral face (83, 3) in the canonical
    frame, divided by the inter-ocular distance, and the inter-ocular distance (mean, std) in mm.

    Identity geometry (optional, used by `calibrated_rest`): `neutral_std` (83, 3), the standard deviation per
    point and axis of the real neutral faces over all sequences (between people and between one person's
    sequences: a person's tracked neutral face differs from sequence to sequence, and a generated subject's scans
    should differ as much); `generator_mean` / `generator_std`, the same two statistics of the
    generator's own subjects with the real layout placed on them (computed from the generator, not from real data).

    How the points vary together (optional, `identity_components` of `fit`): `neutral_directions` (k, 83, 3), the
    k leading unit principal directions of the real neutral faces (no person's scores), `neutral_spreads` (k,) their
    standard deviations and `neutral_residual_std` (83, 3) the per-point spread they leave; `generator_directions`,
    `generator_spreads` and `generator_residual_std`, the same for the generator's subjects.
    """

    expressions: dict[str, ExpressionModel]
    neutral: np.ndarray
    interocular_mm: tuple[float, float]
    source: str = ""
    subjects: int = 0
    settings: dict = field(default_factory=dict)
    neutral_std: np.ndarray | None = None
    generator_mean: np.ndarray | None = None
    generator_std: np.ndarray | None = None
    neutral_directions: np.ndarray | None = None
    neutral_spreads: np.ndarray | None = None
    neutral_residual_std: np.ndarray | None = None
    generator_directions: np.ndarray | None = None
    generator_spreads: np.ndarray | None = None
    generator_residual_std: np.ndarray | None = None

    @classmethod
    def fit(cls, motions: list[tuple[str, str, LandmarkMotion]], components: int = 5, source: str = "",
            reference: FaceModel | None = None, identity_subjects: int = 100,
            identity_components: int = IDENTITY_COMPONENTS,
            outlier_z: float | None = OUTLIER_Z) -> MotionCalibration:
        """Fit the calibration to real sequences: (subject, expression, motion) triples, with at least two
        sequences of each of the six basic expressions.

        Args:
            motions: the sequences.
            components: principal directions per expression (at most the number of sequences minus one).
            source: what the sequences are (stored in the file).
            reference: the generated subject whose AUs refit the real motion (default: `reference_model`).
            identity_subjects: generator subjects (0.. of the default generator) that `generator_mean` and
                `generator_std` are measured on; 0 leaves the identity geometry out.
            identity_components: principal directions of the neutral faces (real and generated) with which
                `calibrated_rest` matches how the points vary together, not only their per-point spread; 0 keeps
                the per-point rescaling alone. At most the number of sequences and of `identity_subjects`, minus 1.
            outlier_z: sequences whose apex lies farther from the expression's median apex field than this many
                robust standard deviations are left out of that expression's fit (`apex_outliers`; only for an
                expression with at least `OUTLIER_MIN_SEQUENCES` sequences, below which a median absolute deviation
                says little); None keeps all. How many each expression lost is in ``settings["outliers_left_out"]``.

        Raises:
            ConfigError: an expression with fewer than two sequences, components < 1, identity_components < 0 or
                more identity components than the neutral faces (real or generated) allow.
        """
        if components < 1:
            raise ConfigError(f"components must be at least 1, got {components}")
        if identity_components < 0:
            raise ConfigError(f"identity_components must be at least 0, got {identity_components}")
        if identity_subjects and identity_components and identity_components >= min(len(motions), identity_subjects):
            raise ConfigError(f"identity_components={identity_components} needs more than that many sequences "
                              f"({len(motions)}) and generator subjects ({identity_subjects})")
        neutrals = np.stack([m.landmarks[m.neutral] / m.interocular for _, _, m in motions])
        neutral = neutrals.mean(axis=0)
        reference = reference or reference_model()
        basis = au_basis(reference, neutral)
        rotation, _, interocular = canonical_axes(generator_landmarks(reference, {}, neutral))
        to_reference = interocular * rotation  # normalised canonical motion -> the reference's millimetres
        expressions, left_out = {}, {}
        for expression in BASIC_EXPRESSIONS:
            chosen = [m for _, name, m in motions if name == expression]
            if len(chosen) < 2:
                raise ConfigError(f"{expression}: {len(chosen)} sequences; at least 2 are needed to fit its motion")
            if outlier_z is not None and len(chosen) >= OUTLIER_MIN_SEQUENCES:
                outliers = set(apex_outliers(chosen, outlier_z))
                if len(chosen) - len(outliers) >= 2:
                    left_out[expression] = len(outliers)
                    chosen = [m for index, m in enumerate(chosen) if index not in outliers]
            expressions[expression] = _fit_expression(chosen, components, basis, to_reference)
        interocular = [m.interocular for _, _, m in motions]
        identity = {}
        if identity_subjects:
            shapes = np.stack(_generator_shapes(neutral, identity_subjects))
            identity = {"neutral_std": neutrals.std(axis=0), "generator_mean": shapes.mean(axis=0),
                        "generator_std": shapes.std(axis=0)}
            if identity_components:
                for prefix, faces, mean in (("neutral", neutrals, neutral), ("generator", shapes, shapes.mean(0))):
                    directions, spreads, residual = _principal(faces - mean, identity_components)
                    identity.update({f"{prefix}_directions": directions, f"{prefix}_spreads": spreads,
                                     f"{prefix}_residual_std": residual})
        return cls(expressions=expressions, neutral=neutral,
                   interocular_mm=(float(np.mean(interocular)), float(np.std(interocular))), source=source,
                   subjects=len({subject for subject, _, _ in motions}),
                   settings={"components": components, "identity_subjects": identity_subjects,
                             "identity_components": identity_components if identity_subjects else 0,
                             "outlier_z": outlier_z, "outliers_left_out": left_out}, **identity)

    def to_dict(self) -> dict:
        identity = {name: _round(getattr(self, name)) for name in IDENTITY_FIELDS if getattr(self, name) is not None}
        return {"version": CALIBRATION_VERSION, "source": self.source, "subjects": self.subjects,
                "settings": self.settings, "interocular_mm": _round(self.interocular_mm),
                "neutral": _round(self.neutral), **identity,
                "expressions": {name: model.to_dict() for name, model in self.expressions.items()}}

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> MotionCalibration:
        if data.get("version") != CALIBRATION_VERSION:
            raise FormatError(f"calibration version {data.get('version')!r}; this library reads version "
                              f"{CALIBRATION_VERSION}", path)
        try:
            expressions = {name: ExpressionModel.from_dict(value) for name, value in data["expressions"].items()}
            neutral = np.asarray(data["neutral"], float)
            identity = {name: np.asarray(data[name], float) for name in IDENTITY_FIELDS if name in data}
            calibration = cls(expressions=expressions, neutral=neutral,
                              interocular_mm=tuple(data["interocular_mm"]), source=data.get("source", ""),
                              subjects=int(data.get("subjects", 0)), settings=dict(data.get("settings", {})),
                              **identity)
        except (KeyError, TypeError, ValueError) as error:
            raise FormatError(f"not a motion calibration: {type(error).__name__}: {error}", path) from None
        missing = sorted(set(BASIC_EXPRESSIONS) - set(expressions))
        if missing or neutral.shape != (NUM_POINTS, 3):
            raise FormatError(f"incomplete motion calibration (missing {missing}, neutral {neutral.shape})", path)
        return calibration

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike = CALIBRATION_FILE) -> MotionCalibration:
        """Read a calibration written by `save` (default: the shipped one)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FormatError(f"cannot read the motion calibration: {error}", path) from None
        return cls.from_dict(data, path)


def apex_outliers(motions: list[LandmarkMotion], z: float) -> list[int]:
    """Indices of the sequences whose apex displacement field is an outlier among `motions` (one expression):
    the mean distance of its 83 points from the per-point median field, as a robust z-score (distance minus the
    median distance, over 1.4826 x the median absolute deviation: the modified z-score of Iglewicz & Hoaglin, 1993,
    whose suggested cut-off is 3.5), above `z`. An empty list when the deviations do not spread (MAD 0).

    Why: on the development subjects one disgust sequence sits 9.8 robust SDs out (its apex 0.25 inter-ocular
    distances from the median field, the next 0.10); kept, it made disgust's first direction spread 4.6 instead of
    3.2 mm per point and its asymmetry 3.8 instead of 2.2 mm, and generated disgust moved far more, and more
    variously, than real disgust (docs/real_motion.md)."""
    apex = np.stack([m.displacements()[m.apex] for m in motions])
    distances = np.linalg.norm(apex - np.median(apex, axis=0), axis=-1).mean(axis=-1)
    spread = 1.4826 * np.median(np.abs(distances - np.median(distances)))
    if spread <= 0:
        return []
    return [int(i) for i in np.flatnonzero((distances - np.median(distances)) / spread > z)]


#: The optional identity-geometry fields of `MotionCalibration`.
IDENTITY_FIELDS = ("neutral_std", "generator_mean", "generator_std", "neutral_directions", "neutral_spreads",
                   "neutral_residual_std", "generator_directions", "generator_spreads", "generator_residual_std")


def _principal(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k leading unit principal directions (k, 83, 3) of centred faces (n, 83, 3), their standard deviations
    (k,) and the per-point standard deviation (83, 3) of what they leave."""
    flat = centred.reshape(len(centred), -1)
    _, singular, vt = np.linalg.svd(flat, full_matrices=False)
    directions = vt[:k]
    residual = flat - (flat @ directions.T) @ directions
    return (directions.reshape(k, *centred.shape[1:]), singular[:k] / np.sqrt(len(flat)),
            residual.std(axis=0).reshape(centred.shape[1:]))


def _generator_shapes(neutral: np.ndarray, subjects: int) -> list[np.ndarray]:
    from ..geometry.motion import frame_shape
    from .subjects import SyntheticSettings, subject_model

    settings = SyntheticSettings(vertices=400, texture_size=32)
    return [frame_shape(generator_landmarks(subject_model(index, settings)[1], {}, neutral))
            for index in range(subjects)]


def load_calibration(source: str | os.PathLike | MotionCalibration = "bu4dfe") -> MotionCalibration:
    """A calibration: itself, "bu4dfe" (the shipped `CALIBRATION_FILE`) or a path to a saved one."""
    if isinstance(source, MotionCalibration):
        return source
    return MotionCalibration.load(CALIBRATION_FILE if str(source) == "bu4dfe" else source)


def _fit_expression(motions: list[LandmarkMotion], components: int, basis: np.ndarray,
                    to_reference: np.ndarray) -> ExpressionModel:
    apex = np.stack([m.displacements()[m.apex] for m in motions])
    symmetric = 0.5 * (apex + mirror(apex))
    antisymmetric = apex - symmetric
    flat = symmetric.reshape(len(apex), -1)
    mean = flat.mean(axis=0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    k = min(components, len(apex) - 1)
    spreads = singular[:k] / np.sqrt(len(apex) - 1)
    left = (flat - mean) - ((flat - mean) @ vt[:k].T) @ vt[:k]
    residual = float(np.sqrt((left ** 2).sum() / max(1, (len(apex) - 1) * flat.shape[1])))
    asymmetry = np.sqrt((antisymmetric ** 2).sum(axis=0) / max(1, len(apex) - 1))
    ratios = [_magnitude(m.displacements()[m.onset]) / max(_magnitude(m.displacements()[m.apex]), 1e-9)
              for m in motions]
    activations = np.stack([fit_activations(basis, d @ to_reference) for d in apex])
    timing = {}
    started = [m for m in motions if m.neutral == 0 and m.num_frames > 1] or motions
    for name in ("onset", "apex", "offset"):
        values = [getattr(m, name) / (m.num_frames - 1) for m in started if getattr(m, name) >= 0]
        timing[name] = (float(np.mean(values)), float(np.std(values))) if values else (1.0, 0.0)
    rests = [m.magnitude[-1] / max(m.magnitude[m.apex], 1e-9) for m in started]
    timing["rest"] = (float(np.mean(rests)), float(np.std(rests)))
    return ExpressionModel(mean=apex.mean(axis=0), components=vt[:k].reshape(k, NUM_POINTS, 3), spreads=spreads,
                           residual=residual, asymmetry=asymmetry,
                           onset_ratio=(float(np.mean(ratios)), float(np.std(ratios))),
                           activations=activations.mean(axis=0),
                           covariance=np.cov(activations, rowvar=False) if len(apex) > 1 else
                           np.zeros((len(ACTION_UNITS),) * 2),
                           timing=timing, samples=len(apex))


def _magnitude(displacement: np.ndarray) -> float:
    return float(np.linalg.norm(displacement[list(INNER)], axis=-1).mean())


# --- the real layout on a generated face ---------------------------------------------------------------------------


def reference_model() -> FaceModel:
    """The generated subject the AU refit of `MotionCalibration.fit` uses: subject 0 of the default generator."""
    from .subjects import SyntheticSettings, subject_model

    return subject_model(0, SyntheticSettings(vertices=400, texture_size=32))[1]


def generator_points(model: FaceModel, acts: dict[int, float], neutral: np.ndarray) -> np.ndarray:
    """Parametric (x, y) (83, 2) of the real layout's points on a generated face under AU activations `acts`.

    Eyes, brows, mouth and contour are the generator's own landmarks (`GENERATOR_INDEX`). The nose outline is placed
    from the calibration's mean `neutral` face: across, in units of the alar half-width (points 39 and 44) mapped
    onto the subject's ``nose_width / 2``; up, linearly between the subnasale (41/42) mapped onto the subject's
    ``subnasale_y`` and the inner eye corners (0/8) mapped onto ``eye_y``.
    """
    p = model.params
    generator = landmarks_2d(p, acts)
    out = np.zeros((NUM_POINTS, 2))
    for real, index in enumerate(GENERATOR_INDEX):
        if index >= 0:
            out[real] = generator[index]
    alar = 0.5 * (abs(neutral[39, 0]) + abs(neutral[44, 0]))
    subnasale = 0.5 * (neutral[41, 1] + neutral[42, 1])
    eyes = 0.5 * (neutral[0, 1] + neutral[8, 1])
    nose = neutral[list(NOSE)]
    out[list(NOSE), 0] = nose[:, 0] / alar * 0.5 * p.nose_width
    out[list(NOSE), 1] = p.subnasale_y + (nose[:, 1] - subnasale) / (eyes - subnasale) * (p.eye_y - p.subnasale_y)
    return out


def generator_landmarks(model: FaceModel, acts: dict[int, float], neutral: np.ndarray) -> np.ndarray:
    """3D positions (83, 3) of the real layout's points on a generated face under `acts` (before pose and noise)."""
    xy = generator_points(model, acts, neutral)
    return model.surface(xy[:, 0], xy[:, 1], acts)


def au_basis(model: FaceModel, neutral: np.ndarray) -> np.ndarray:
    """(83 * 3, len(ACTION_UNITS)): how the real layout's points move (mm) under each AU at activation 1."""
    rest = generator_landmarks(model, {}, neutral)
    return np.stack([(generator_landmarks(model, {au: 1.0}, neutral) - rest).ravel() for au in ACTION_UNITS],
                    axis=1)


def fit_activations(basis: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """AU activations in [0, `MAX_ACTIVATION`] whose landmark motion (`au_basis`) best matches `displacement`
    (83, 3) in mm on the non-contour points (bounded least squares; the contour's tracked motion is left to the
    warp)."""
    from scipy.optimize import lsq_linear

    rows = np.asarray(INNER)[:, None] * 3 + np.arange(3)
    target = np.asarray(displacement, float).reshape(NUM_POINTS, 3)[list(INNER)].ravel()
    return lsq_linear(basis[rows.ravel()], target, bounds=(0.0, MAX_ACTIVATION)).x


def calibrated_rest(model: FaceModel, calibration: MotionCalibration) -> np.ndarray:
    """The neutral landmarks (83, 3; real layout, the generator's millimetres) a calibrated scan of `model` starts
    from, in the canonical frame and inter-ocular units while it is adjusted. Without the calibration's identity
    geometry: the generator's own landmarks.

    With the per-point statistics only: the generated face's deviation from the generator's mean face is rescaled
    per point and axis to the real spread and added to the real mean face, so the generator's faces keep their
    individual shapes with the real faces' proportions and per-point variety (on the development subjects the real
    points spread 1.1-1.8 times as much as the generator's, and the generator's face outline lies 0.28 inter-ocular
    distances from the tracked one on average).

    With the principal directions as well (`MotionCalibration.fit`'s `identity_components`), how the points vary
    together is matched too: the deviation's coordinates on the generator's k directions are whitened (divided by
    their spreads), turned by the orthogonal k x k matrix closest to the overlap of the two bases (the polar factor
    of ``real_directions @ generator_directions.T``, so that a direction the two share keeps its meaning) and
    recoloured with the real spreads on the real directions; what the k directions leave is rescaled per point as
    above. Whitened coordinates stay white under a rotation, so the generated faces get the real covariance in the
    k directions. The pairing of the two bases is the library's choice; the real faces' spread includes how one
    person's tracked neutral face differs between sequences.
    """
    from ..geometry.motion import frame_shape

    rest = generator_landmarks(model, {}, calibration.neutral)
    if calibration.neutral_std is None or calibration.generator_mean is None or calibration.generator_std is None:
        return rest
    shape = frame_shape(rest)
    deviation = shape - calibration.generator_mean
    if calibration.neutral_directions is not None and calibration.generator_directions is not None:
        real, generated = (d.reshape(len(d), -1) for d in (calibration.neutral_directions,
                                                            calibration.generator_directions))
        scores = generated @ deviation.ravel()
        residual = deviation - (scores @ generated).reshape(deviation.shape)
        left, _, right = np.linalg.svd(real @ generated.T)
        whitened = scores / np.maximum(calibration.generator_spreads, 1e-9)
        recoloured = ((left @ right) @ whitened) * calibration.neutral_spreads
        wanted = (calibration.neutral + (recoloured @ real).reshape(deviation.shape)
                  + residual * calibration.neutral_residual_std / np.maximum(calibration.generator_residual_std, 1e-6))
    else:
        wanted = calibration.neutral + deviation * calibration.neutral_std / np.maximum(calibration.generator_std,
                                                                                          1e-6)
    rotation, _, interocular = canonical_axes(rest)
    return rest + interocular * (wanted - shape) @ rotation


def calibrated_scan(model: FaceModel, displacement: np.ndarray, rng: np.random.Generator,
                    calibration: MotionCalibration, nuisance: Nuisance | None = None, pose: np.ndarray | None = None,
                    meta: dict | None = None) -> SyntheticScan:
    """A scan of a generated subject showing `displacement` (83, 3; canonical axes, divided by the inter-ocular
    distance, as `LandmarkMotion.displacements()` or `ExpressionModel.sample` give it); see the module docstring.

    The motion starts from `calibrated_rest`. The scan's landmarks are the 83 points of the real layout (``bnd_00``
    ...), then the project's named points (`STANDARD_IN_REAL`, and the generator's nose tip). Each landmark lands
    where it was sent, up to the nuisance's pose and landmark noise; ``meta["activations"]`` holds the fitted AUs.
    """
    neutral = calibration.neutral
    rest = calibrated_rest(model, calibration)
    rotation, _, interocular = canonical_axes(rest)
    motion = interocular * np.asarray(displacement, float) @ rotation
    target = rest + motion
    acts = dict(zip(ACTION_UNITS, fit_activations(au_basis(model, neutral), motion).tolist()))
    moved = generator_landmarks(model, acts, neutral)
    spline = ThinPlateSpline(moved, target)
    tip = spline(model.surface(np.zeros(1), np.zeros(1), acts))
    standard = np.array([target[STANDARD_IN_REAL[name]] if name in STANDARD_IN_REAL else tip[0]
                         for name in STANDARD_LANDMARKS])
    meta = {**(meta or {}), "activations": {str(au): round(value, 4) for au, value in acts.items()}}
    return model.scan(acts, rng, nuisance, pose=pose, asymmetry=0.0, meta=meta, deform=spline,
                      landmarks=np.concatenate([target, standard]), landmark_names=BND_NAMES + list(STANDARD_LANDMARKS))
