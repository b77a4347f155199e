"""Data sets: the synthetic generator (the embedded default), indexes of the real data sets as
`datasets.Dataset`, and subject-independent evaluation protocols.

Importing this package is light (no torch): the loaders import `datasets` when called.
"""

from .bosphorus import load_bosphorus
from .bu3dfe import load_bu3dfe
from .bu4dfe import load_bu4dfe
from .deap import load_deap, load_deap_subject
from .folds import bosphorus_protocol, bu3dfe_protocol, leave_one_subject_out, subject_kfold
from .mahnob import load_mahnob, subject_folds
from .safe_pickle import restricted_load
from .synthetic import SyntheticSummary, generate
from .synthetic_video import SyntheticVideo, generate_videos

__all__ = [
    "SyntheticSummary",
    "SyntheticVideo",
    "bosphorus_protocol",
    "bu3dfe_protocol",
    "generate",
    "generate_videos",
    "leave_one_subject_out",
    "load_bosphorus",
    "load_bu3dfe",
    "load_bu4dfe",
    "load_deap",
    "load_deap_subject",
    "load_mahnob",
    "restricted_load",
    "subject_folds",
    "subject_kfold",
]
