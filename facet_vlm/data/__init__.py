"""Data sets: the synthetic generator (the embedded default), indexes of the real data sets as
`datasets.Dataset`, and subject-independent evaluation protocols.

Importing this package is light (no torch): the loaders import `datasets` when called.
"""

from .bosphorus import load_bosphorus
from .bp4d import BP4D_TASKS, cross_dataset_subset, load_bp4d, read_au_intensity, read_au_occurrence
from .bu3dfe import load_bu3dfe
from .bu4dfe import landmark_motion, load_bu4dfe
from .calibrate import MotionCalibration, calibrated_scan, load_calibration
from .deap import load_deap, load_deap_subject
from .folds import bosphorus_protocol, bu3dfe_protocol, leave_one_subject_out, subject_kfold
from .fourdme import leave_one_subject_out_folds, load_4dme, read_label_sheet
from .mahnob import load_mahnob, subject_folds
from .safe_pickle import restricted_load
from .sequences import (
    FrameSelection,
    SequenceError,
    apex_frame_index,
    apex_rows,
    select_frame_indices,
    select_frames,
    sequence_frames,
    sort_frames,
)
from .synthetic import SyntheticSummary, generate
from .synthetic_sequences import SyntheticSequences, generate_sequences
from .synthetic_video import SyntheticVideo, generate_videos

__all__ = [
    "BP4D_TASKS",
    "FrameSelection",
    "MotionCalibration",
    "SequenceError",
    "SyntheticSequences",
    "SyntheticSummary",
    "SyntheticVideo",
    "apex_frame_index",
    "apex_rows",
    "bosphorus_protocol",
    "bu3dfe_protocol",
    "calibrated_scan",
    "cross_dataset_subset",
    "generate",
    "generate_sequences",
    "generate_videos",
    "landmark_motion",
    "leave_one_subject_out",
    "leave_one_subject_out_folds",
    "load_4dme",
    "load_bosphorus",
    "load_bp4d",
    "load_bu3dfe",
    "load_bu4dfe",
    "load_calibration",
    "load_deap",
    "load_deap_subject",
    "load_mahnob",
    "read_au_intensity",
    "read_au_occurrence",
    "read_label_sheet",
    "restricted_load",
    "select_frame_indices",
    "select_frames",
    "sequence_frames",
    "sort_frames",
    "subject_folds",
    "subject_kfold",
]
