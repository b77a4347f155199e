"""Who a generated subject is: its identity (sex, ethnicity, names in each layout), the settings that decide the
generated files, and its face model — shared by the generator (`facet_vlm.data.synthetic`) and the motion
calibration (`facet_vlm.data.calibrate`), which fits the generator's faces to real ones."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError
from .face_model import RACE_WEIGHTS, FaceModel, Nuisance, sample_subject

#: Share of women among the subjects, as in BU-3DFE (56 of 100).
FEMALE_SHARE = 0.56


@dataclass
class SubjectIdentity:
    """Who synthetic subject number `index` is, and its name in each layout."""

    index: int
    sex: str
    race: str
    bu3dfe: str  # F0001
    bosphorus: str  # bs000
    bu4dfe: str  # F001


def subject_identity(index: int, seed: int = 0) -> SubjectIdentity:
    """Sex (a fixed 56 % female pattern), ethnicity (random, BU-3DFE shares) and names of subject `index`.

    Numbering depends only on the subjects before `index`, never on how many are generated.
    """
    female = int(np.floor((index + 1) * FEMALE_SHARE) - np.floor(index * FEMALE_SHARE)) == 1
    females_before = int(np.floor(index * FEMALE_SHARE))
    number = females_before + 1 if female else index - females_before + 1
    sex = "F" if female else "M"
    races = list(RACE_WEIGHTS)
    weights = np.array([RACE_WEIGHTS[r] for r in races])
    race = races[int(np.random.default_rng([seed, index, 0]).choice(len(races), p=weights / weights.sum()))]
    return SubjectIdentity(index=index, sex=sex, race=race, bu3dfe=f"{sex}{number:04d}",
                           bosphorus=f"bs{index:03d}", bu4dfe=f"{sex}{number:03d}")


@dataclass
class SyntheticSettings:
    """Everything that decides the generated files (stored in each completion marker)."""

    seed: int = 0
    intensities: int = 4
    include_neutral: bool = True
    sequence_frames: int = 12
    vertices: int = 6000
    texture_size: int = 512
    nuisance: Nuisance = field(default_factory=Nuisance)
    motion: str = ""  # "" (the AU expression model) or a motion calibration: "bu4dfe" or a file (see `generate`)

    def __post_init__(self) -> None:
        if not 1 <= self.intensities <= 4:
            raise ConfigError(f"intensities must be 1..4 (BU-3DFE has 4 levels), got {self.intensities}")
        if self.sequence_frames < 2:
            raise ConfigError(f"sequence_frames must be at least 2, got {self.sequence_frames}")
        self.nuisance = as_nuisance(self.nuisance)
        self.motion = str(self.motion or "")

    def amount(self, level: int) -> float:
        """AU activation of intensity `level` (1..intensities): evenly spaced up to 1, e.g. 0.25 .. 1.0."""
        return level / self.intensities

    def to_json(self) -> dict:
        """The settings as JSON; nuisance fields added after generator version 1 only when they are not at their
        default (off), so folders generated before they existed still resume."""
        content = json.loads(json.dumps(asdict(self)))
        defaults = asdict(Nuisance())
        for name in _LATER_NUISANCE_FIELDS:
            if content["nuisance"][name] == json.loads(json.dumps(defaults[name])):
                del content["nuisance"][name]
        if not content["motion"]:
            del content["motion"]
        return content


#: Nuisance fields that version 1 of the generator did not have (the hard setting of issue 17).
_LATER_NUISANCE_FIELDS = ("style_weight", "style_coactivation", "style_extra_aus", "subject_asymmetry",
                          "movement_prob", "movement_amount", "shape_spread", "texture_spread", "vertex_range",
                          "remesh_prob", "decimate_prob", "decimate_keep", "ripple_mm", "light_deg", "white_balance")


def as_nuisance(value: Nuisance | str | dict | None) -> Nuisance:
    """A `Nuisance` from itself, a preset name ("default", "hard", "pretrain"), a dict of fields (optionally with
    "preset": a name whose fields the others replace), or None (the default)."""
    if value is None:
        return Nuisance()
    if isinstance(value, Nuisance):
        return value
    if isinstance(value, str):
        return Nuisance.preset(value)
    if isinstance(value, dict):
        settings = dict(value)
        return Nuisance.preset(settings.pop("preset", "default"), **settings)
    raise ConfigError(f"nuisance must be a Nuisance, a preset name or a dict of fields, got {type(value).__name__}")


def subject_model(index: int, settings: SyntheticSettings | None = None) -> tuple[SubjectIdentity, FaceModel]:
    """Subject `index`'s identity and face model, exactly as `generate` builds them."""
    settings = settings or SyntheticSettings()
    nuisance = settings.nuisance
    identity = subject_identity(index, settings.seed)
    params = sample_subject(np.random.default_rng([settings.seed, index, 1]), identity.sex, identity.race,
                            nuisance.shape_spread, nuisance.texture_spread)
    vertices = settings.vertices
    if tuple(nuisance.vertex_range) != (1.0, 1.0):
        vertices = max(200, int(round(vertices * np.random.default_rng([settings.seed, index, 5]).uniform(
            *nuisance.vertex_range))))
    remesh = nuisance.remesh_prob > 0 and np.random.default_rng([settings.seed, index, 6]).random() < \
        nuisance.remesh_prob
    model = FaceModel(params, vertices=vertices, texture_size=settings.texture_size,
                      seed=int(np.random.default_rng([settings.seed, index, 2]).integers(2 ** 31)), remesh=remesh)
    return identity, model


__all__ = ["FEMALE_SHARE", "SubjectIdentity", "SyntheticSettings", "as_nuisance", "subject_identity", "subject_model"]
