"""Subject-independent evaluation protocols: k-fold over subjects, leave-one-subject-out, and the standard
BU-3DFE (P1 / P2) and Bosphorus protocols of the 3D facial-expression literature.

No subject ever appears in both the training and the test part of a fold. `build_folds` turns a protocol name
(``--protocol`` of ``scripts/train.py`` and ``scripts/evaluate_model.py``) into (train subjects, test subjects)
pairs, and `select_folds` picks the folds a run trains or scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError


def _unique(subjects: Iterable[str]) -> list[str]:
    return sorted({str(subject) for subject in subjects})


def subject_kfold(subjects: Iterable[str], k: int = 10, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Split the unique `subjects` into `k` near-equal test groups (shuffled by `seed`).

    Returns k ``(train_subjects, test_subjects)`` pairs, both sorted; every subject is in exactly one test group.

    Raises:
        ConfigError: when k < 2 or k exceeds the number of unique subjects.
    """
    unique = _unique(subjects)
    if k < 2:
        raise ConfigError(f"k must be at least 2, got {k}")
    if k > len(unique):
        raise ConfigError(f"cannot make {k} folds from {len(unique)} subjects; use k <= {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    groups = np.array_split(order, k)
    folds = []
    for group in groups:
        test = sorted(unique[i] for i in group)
        held_out = set(test)
        folds.append(([s for s in unique if s not in held_out], test))
    return folds


def leave_one_subject_out(subjects: Iterable[str]) -> list[tuple[list[str], list[str]]]:
    """One fold per unique subject: ``(all other subjects, [subject])``, in sorted subject order."""
    unique = _unique(subjects)
    if len(unique) < 2:
        raise ConfigError(f"leave-one-subject-out needs at least 2 subjects, got {len(unique)}")
    return [([s for s in unique if s != subject], [subject]) for subject in unique]


def _split(dataset, folds: list[tuple[list[str], list[str]]]) -> list:
    subjects = np.asarray(dataset["subject"])
    out = []
    for train, test in folds:
        train_rows = np.flatnonzero(np.isin(subjects, train))
        test_rows = np.flatnonzero(np.isin(subjects, test))
        out.append((dataset.select(train_rows), dataset.select(test_rows)))
    return out


def _expression_rows(dataset) -> np.ndarray:
    """Rows showing one of the six basic expressions (label >= 0)."""
    return np.flatnonzero(np.asarray(dataset["label"]) >= 0)


def bu3dfe_protocol(dataset, protocol: str = "p1", k: int = 10, seed: int = 0, round: int = 0,
                    num_subjects: int = 60, levels: int = 2) -> list:
    """The standard BU-3DFE protocols: `num_subjects` subjects x 6 expressions x the `levels` highest intensities
    (60 x 6 x 2 = 720 scans), evaluated by subject-independent k-fold cross-validation.

    - "p1": the subjects are drawn once (by `seed`) and kept for every round; rounds differ by the fold split.
    - "p2": the subjects are drawn again in every round (by `seed` and `round`), then split into folds.

    Args:
        dataset: a `load_bu3dfe` index (columns subject, label, intensity).
        protocol: "p1" or "p2".
        k: folds per round.
        seed: the experiment's seed.
        round: the repetition index (papers average 10 or 100 rounds).
        num_subjects: how many subjects the protocol uses (60 in the literature).
        levels: how many of the highest intensity levels to keep (2: levels 3 and 4).

    Returns:
        k ``(train Dataset, test Dataset)`` pairs.

    Raises:
        ConfigError: on an unknown protocol, or fewer subjects than `num_subjects`.
    """
    protocol = protocol.lower()
    if protocol not in ("p1", "p2"):
        raise ConfigError(f"protocol must be 'p1' or 'p2', got {protocol!r}")
    rows = _expression_rows(dataset)
    intensity = np.asarray(dataset["intensity"])[rows]
    top = sorted(set(intensity.tolist()))[-levels:]
    rows = rows[np.isin(intensity, top)]
    subset = dataset.select(rows)
    available = _unique(subset["subject"])
    if num_subjects > len(available):
        raise ConfigError(f"protocol {protocol} needs {num_subjects} subjects, the data set has {len(available)}; "
                          "lower num_subjects")
    selection_seed = [seed] if protocol == "p1" else [seed, round]
    chosen = np.random.default_rng(selection_seed).choice(len(available), size=num_subjects, replace=False)
    subjects = [available[i] for i in sorted(chosen)]
    fold_seed = int(np.random.default_rng([seed, round, 1]).integers(2 ** 31))
    return _split(subset, subject_kfold(subjects, k=k, seed=fold_seed))


def bosphorus_protocol(dataset, k: int = 10, seed: int = 0, num_subjects: int | None = None) -> list:
    """Bosphorus: the six basic expressions, subject-independent k-fold (optionally on `num_subjects` subjects
    drawn by `seed`, e.g. 60 as in several papers). Returns k ``(train Dataset, test Dataset)`` pairs."""
    subset = dataset.select(_expression_rows(dataset))
    subjects = _unique(subset["subject"])
    if num_subjects is not None:
        if num_subjects > len(subjects):
            raise ConfigError(f"num_subjects={num_subjects} but the data set has {len(subjects)} subjects")
        chosen = np.random.default_rng([seed]).choice(len(subjects), size=num_subjects, replace=False)
        subjects = [subjects[i] for i in sorted(chosen)]
    return _split(subset, subject_kfold(subjects, k=k, seed=seed))


PROTOCOLS = ("subject-kfold", "loso", "holdout", "bu3dfe-p1-<K>fold", "bu3dfe-p2-<K>fold")


def column(dataset: Any, name: str) -> list[Any]:
    """One column of a `datasets.Dataset` as a plain list (datasets 5 returns a lazy `Column` object)."""
    return list(dataset.with_format(None)[name])


def build_folds(dataset: Any, protocol: str = "subject-kfold", k: int = 10, seed: int = 0,
                test_fraction: float = 0.2) -> list[tuple[list[str], list[str]]]:
    """(train subjects, test subjects) per fold of `protocol`; no subject is ever on both sides of a fold.

    Args:
        dataset: rows with a ``subject`` column (a `datasets.Dataset`).
        protocol: ``subject-kfold`` (`k` folds of subjects), ``loso`` (leave one subject out), ``holdout`` (one
            split: `test_fraction` of the subjects, drawn by `seed`), ``bu3dfe-p1-<K>fold`` / ``bu3dfe-p2-<K>fold``
            (`bu3dfe_protocol`: 60 subjects drawn by `seed`, or every subject when the data set has fewer; the two
            highest intensities, which the rows must already be restricted to).
        k: folds of ``subject-kfold``.
        seed: seed of the subject shuffle.
        test_fraction: share of subjects held out by ``holdout``.
    """
    subjects = sorted(set(column(dataset, "subject")))
    if protocol == "subject-kfold":
        if k > len(subjects):
            raise ConfigError(f"--folds {k} is more than the {len(subjects)} subjects of the data set")
        folds = subject_kfold(subjects, k=k, seed=seed)
    elif protocol == "loso":
        folds = leave_one_subject_out(subjects)
    elif protocol == "holdout":
        order = np.random.default_rng(seed).permutation(len(subjects))
        num_test = max(1, round(test_fraction * len(subjects)))
        test = sorted(subjects[i] for i in order[:num_test])
        folds = [(sorted(set(subjects) - set(test)), test)]
    elif protocol.startswith("bu3dfe-"):
        variant, num_folds = parse_bu3dfe_protocol(protocol)
        splits = bu3dfe_protocol(dataset.with_format(None), protocol=variant, k=num_folds, seed=seed,
                                 num_subjects=min(60, len(subjects)))
        folds = [(sorted(set(column(train, "subject"))), sorted(set(column(test, "subject"))))
                 for train, test in splits]
    else:
        raise ConfigError(f"unknown --protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    folds = [(sorted(train), sorted(test)) for train, test in folds]
    for index, (train, test) in enumerate(folds):
        shared = set(train) & set(test)
        if shared:
            raise ConfigError(f"fold {index} of protocol {protocol!r} has subjects in train and test: {sorted(shared)}")
    return folds


def limit_train_subjects(folds: list[tuple[list[str], list[str]]], max_subjects: int | None, seed: int = 0
                         ) -> list[tuple[list[str], list[str]]]:
    """Folds whose training part keeps at most `max_subjects` of its subjects (learning curves: how accuracy grows
    with the number of training subjects); the test part is unchanged, so no test subject is ever added.

    The kept subjects are the first `max_subjects` of a permutation of the fold's sorted training subjects drawn by
    ``(seed, fold index)``: the choice is deterministic, and a smaller subset is contained in a larger one (10 of
    the subjects for 10 are among the 20 for 20), so that the points of a curve differ only in the added subjects.
    `max_subjects` None (or at least the fold's count) keeps every training subject.
    """
    if max_subjects is None:
        return folds
    if max_subjects < 1:
        raise ConfigError(f"--max_train_subjects must be >= 1, got {max_subjects}")
    limited = []
    for index, (train, test) in enumerate(folds):
        order = np.random.default_rng([seed, index]).permutation(len(train))
        limited.append((sorted(train[i] for i in order[:max_subjects]), test))
    return limited


def parse_bu3dfe_protocol(protocol: str) -> tuple[str, int]:
    """``"bu3dfe-p1-10fold"`` → ``("p1", 10)``."""
    parts = protocol.lower().split("-")
    if len(parts) != 3 or parts[1] not in ("p1", "p2") or not parts[2].endswith("fold") or not parts[2][:-4].isdigit():
        raise ConfigError(f"--protocol {protocol!r}: write bu3dfe-p1-<K>fold or bu3dfe-p2-<K>fold "
                          "(e.g. bu3dfe-p1-10fold)")
    return parts[1], int(parts[2][:-4])


def select_folds(num_folds: int, fold: int | None = None, max_folds: int | None = None) -> list[int]:
    """Indices of the folds a run uses: only `fold`, or the first `max_folds`, or all of them."""
    if fold is not None:
        if not 0 <= fold < num_folds:
            raise ConfigError(f"--fold {fold} is out of range: the protocol has {num_folds} folds (0..{num_folds - 1})")
        return [fold]
    count = num_folds if max_folds is None else min(num_folds, max_folds)
    return list(range(count))
