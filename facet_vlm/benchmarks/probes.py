"""The linear identity probe the physio benchmarks share (``bench.py compare``'s subject probe, ``bench.py physio``'s
identity probes and ``bench.py physio-readout``): logistic regression on features standardised inside each training
split, scored by stratified cross-validation over clips with a fixed seed, so that every feature set of a model is
split the same way."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError


def standardised_probe() -> Any:
    """A fresh probe: `StandardScaler` then `LogisticRegression` (5000 iterations), as a scikit-learn pipeline."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as error:
        raise ConfigError("the identity probes need scikit-learn: pip install 'facet-vlm[report]'") from error
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def identity_cv_scores(values: np.ndarray, subjects: np.ndarray, folds: int) -> np.ndarray:
    """Per-split accuracies (fractions) of `standardised_probe` telling ``subjects`` apart from ``values`` (N, D):
    stratified CV with ``min(folds, fewest clips of a person)`` splits, shuffled with seed 0.

    Raises:
        ConfigError: fewer than 2 people, or a person with a single clip (no split could hold them out).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    subjects = np.asarray(subjects)
    people, counts = np.unique(subjects, return_counts=True)
    splits = int(min(folds, counts.min())) if len(people) else 0
    if len(people) < 2 or splits < 2:
        raise ConfigError(f"an identity probe needs at least 2 people with at least 2 clips each (got {len(people)} "
                          f"people, fewest clips {int(counts.min()) if len(people) else 0})")
    return cross_val_score(standardised_probe(), np.asarray(values), subjects,
                           cv=StratifiedKFold(splits, shuffle=True, random_state=0))


__all__ = ["identity_cv_scores", "standardised_probe"]
