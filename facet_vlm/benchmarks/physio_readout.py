"""Would per-person normalisation help the physio model on unseen people? (``bench.py physio-readout``)

The subject adapters and the identity terms of the physio-facial prompt model did not take identity out of its
shared features (``docs/physio.md``). This benchmark asks the question the other way round, on the saved models of
every fold: a linear read-out (logistic regression on standardised features, fitted on the fold's training people,
scored on its unseen test people) of the model's features as they are, and of the same features **centred per
person** — each person's mean over all of their clips subtracted, for an unseen person the mean over their own
unlabelled clips (test-time calibration: it needs several clips of the person, and it assumes their clips are not
all of one class; the generated sets give every person every quadrant). Beside it, the subject-identity probe of
`facet_vlm.benchmarks.physio` on the test people, before and after centring, and after projecting the features off
the directions in which the fold's training people differ (`project_off_training_identity`): whether the unseen
people differ where the training people do, which is all an identity term fitted to the training people can reach.

Centring removes what a linear probe reads about identity by construction (every person's mean becomes the same);
what the read-out measures is whether the features keep the emotion once each person's offset is gone, and whether
that helps on people the model never saw (the pulse is generated on each person's own baseline, so an unseen
person's resting heart rate is unknown to a model without such a reference).

The fold models come from a run that saves every fold's model, or from one training run per fold::

    python scripts/train.py --config facet_vlm/configs/physio_prompt_synthetic_small.json \\
        --final_model every_fold --output_dir runs/both
    python scripts/bench.py physio-readout runs/both

    for k in 0 1 2 3; do python scripts/train.py --config facet_vlm/configs/physio_prompt_synthetic_small.json \\
        --fold $k --output_dir runs/both/fold$k; done
    python scripts/bench.py physio-readout runs/both/fold0 runs/both/fold1 runs/both/fold2 runs/both/fold3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .physio import embed_clips
from .probes import identity_cv_scores, standardised_probe


def centre_per_person(features: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """``features`` (N, D) with each subject's mean over their rows subtracted from their rows (float64)."""
    from ..physio.tfr import person_relative_maps

    return person_relative_maps(features, subjects, dtype=np.float64)


def _identity_cv(values: np.ndarray, subjects: np.ndarray, folds: int) -> float:
    """Identity accuracy (%) of the shared probe over ``values``' clips (`probes.identity_cv_scores`)."""
    return 100 * float(identity_cv_scores(values, subjects, folds).mean())


def _standardise_on_training(features: np.ndarray, subjects: np.ndarray, train_subjects: list[str]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features standardised with the training clips' mean and std (float64), subjects as str, training mask)``."""
    values = np.asarray(features, dtype=np.float64)
    subjects = np.asarray(subjects).astype(str)
    train = np.isin(subjects, [str(s) for s in train_subjects])
    return (values - values[train].mean(axis=0)) / (values[train].std(axis=0) + 1e-8), subjects, train


def project_off_training_identity(features: np.ndarray, subjects: np.ndarray, train_subjects: list[str],
                                  tolerance: float = 5.0, folds: int = 4, max_rounds: int = 20
                                  ) -> tuple[np.ndarray, int, float]:
    """Erase what a linear probe reads about the training people from ``features`` (N, D), by iterative null-space
    projection (INLP, Ravfogel et al., 2020): standardise with the training clips' mean and std, fit a logistic
    regression to tell the training people apart, project every clip onto the null space of its weight vectors
    (at most one fewer than the training people per round), and repeat on the projected features until the
    identity probe (stratified ``folds``-fold CV over the training people's clips) is within ``tolerance`` points
    of chance, or ``max_rounds`` rounds, or one direction is left.

    Returns ``(projected features (float64), rank removed, training people's identity (%) after)``. What a linear
    identity term fitted to the training people (an adversary, subject-mean matching, a null-space projection)
    acts on is such directions; if a probe still tells *unseen* people apart after the projection — and about as
    well as after removing as many random directions (`project_off_random`) — the unseen people differ along other
    directions, which no such term fitted to the training people reaches."""
    values, subjects, train = _standardise_on_training(features, subjects, train_subjects)
    people = np.unique(subjects[train])
    if len(people) < 2:
        raise ConfigError(f"projecting off the training people's identity needs at least 2 of them, got {len(people)}")
    dims, chance = values.shape[1], 100 / len(people)
    removed = np.zeros((dims, 0))
    identity = _identity_cv(values[train], subjects[train], folds)
    for _ in range(max_rounds):
        if identity <= chance + tolerance or removed.shape[1] >= dims - 1:
            break
        probe = standardised_probe().fit(values[train], subjects[train])
        # the probe's weights act on its own standardised input; divided by its scale they are the directions in
        # the features themselves (after the first round the projected features no longer have unit spread)
        weights = probe[-1].coef_ / probe[0].scale_  # (people or 1, D)
        stacked = np.concatenate([removed, weights.T], axis=1)
        basis, singular, _ = np.linalg.svd(stacked, full_matrices=False)
        removed = basis[:, : min(int((singular > 1e-10 * singular[0]).sum()), dims - 1)]
        values = values - (values @ removed) @ removed.T
        identity = _identity_cv(values[train], subjects[train], folds)
    return values, removed.shape[1], identity


def project_off_random(features: np.ndarray, subjects: np.ndarray, train_subjects: list[str], rank: int,
                       seed: int = 0) -> np.ndarray:
    """The control of `project_off_training_identity`: the same standardisation, then ``rank`` random orthonormal
    directions (seeded) removed."""
    values = _standardise_on_training(features, subjects, train_subjects)[0]
    basis = np.linalg.qr(np.random.default_rng(seed).normal(size=(values.shape[1], rank)))[0]
    return values - (values @ basis) @ basis.T


def person_centred_readout(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray,
                           train_subjects: list[str], test_subjects: list[str], identity_folds: int = 4
                           ) -> dict[str, float]:
    """Read-out accuracy (%) on the test people, without and with per-person centring, and the identity probe's
    accuracy (%) on the test people's clips (stratified ``identity_folds``-fold CV over clips) before and after,
    and after projecting the features off the training people's identity directions
    (`project_off_training_identity`).

    Returns ``accuracy``, ``accuracy_centred``, ``identity``, ``identity_centred``, ``identity_projected`` (with
    ``projected_rank``, the number of directions removed, ``training_identity_projected``, the training people's
    identity after, and ``identity_random_projected``, the unseen people's identity with as many random directions
    removed) and ``identity_chance``.
    """
    subjects, labels = np.asarray(subjects).astype(str), np.asarray(labels)
    train = np.isin(subjects, [str(s) for s in train_subjects])
    test = np.isin(subjects, [str(s) for s in test_subjects])
    if not train.any() or not test.any():
        raise ConfigError(f"the read-out needs clips of training and test people (found {int(train.sum())} and "
                          f"{int(test.sum())})")
    if len(np.unique(labels[train])) < 2:
        raise ConfigError("the training people's clips hold a single class: nothing to read out")
    result: dict[str, float] = {}
    counts = np.unique(subjects[test], return_counts=True)[1]
    splits = int(min(identity_folds, counts.min()))
    for suffix, values in (("", np.asarray(features, dtype=np.float64)),
                           ("_centred", centre_per_person(features, subjects))):
        fitted = standardised_probe().fit(values[train], labels[train])
        result[f"accuracy{suffix}"] = 100 * float(fitted.score(values[test], labels[test]))
        if len(counts) >= 2 and splits >= 2:
            result[f"identity{suffix}"] = _identity_cv(values[test], subjects[test], identity_folds)
    if len(counts) >= 2 and splits >= 2 and np.unique(subjects[train], return_counts=True)[1].min() >= 2:
        projected, rank, result["training_identity_projected"] = project_off_training_identity(
            features, subjects, train_subjects, folds=identity_folds)
        result["projected_rank"] = rank
        result["identity_projected"] = _identity_cv(projected[test], subjects[test], identity_folds)
        result["identity_random_projected"] = _identity_cv(
            project_off_random(features, subjects, train_subjects, rank)[test], subjects[test], identity_folds)
    result["identity_chance"] = 100 / len(counts)
    return result


def fold_model_dirs(run_dirs: list[str | Path]) -> list[Path]:
    """The fold models that ``run_dirs`` name: a run of ``--final_model every_fold`` stands for its ``fold_<i>``
    folders that hold a model (in fold order); any other folder for itself (a one-fold run, its ``model/``)."""
    found: list[Path] = []
    for run_dir in map(Path, run_dirs):
        folds = sorted((p.parent.parent for p in run_dir.glob("fold_*/model/config.json")),
                       key=lambda p: int(p.name.split("_")[1]))
        if folds:
            found += folds
        elif (run_dir / "model" / "config.json").is_file():
            found.append(run_dir)
        else:
            raise ConfigError("no saved model in this folder or its fold_<i>/ folders (train with --final_model "
                              "every_fold, or one --fold k run per fold)", run_dir)
    return found


def physio_readout(run_dirs: list[str | Path], config_path: str | Path, arm: str = "both",
                   cache_dir: str | None = None) -> dict[str, Any]:
    """`person_centred_readout` of every feature field for each fold model in ``run_dirs`` (`fold_model_dirs`),
    and the mean and population std over folds."""
    folds = []
    for run_dir in fold_model_dirs(run_dirs):
        features, labels, subjects, record = embed_clips(run_dir, config_path, arm, cache_dir)
        folds.append({"run_dir": str(run_dir), "test_subjects": record["test_subjects"],
                      **{name: person_centred_readout(values, labels, subjects, record["train_subjects"],
                                                      record["test_subjects"])
                         for name, values in features.items()}})
    summary: dict[str, dict[str, list[float]]] = {}
    for name in folds[0]:
        if name in ("run_dir", "test_subjects"):
            continue
        summary[name] = {key: [round(float(np.mean([f[name][key] for f in folds])), 2),
                               round(float(np.std([f[name][key] for f in folds])), 2)] for key in folds[0][name]}
    return {"arm": arm, "config": str(config_path), "folds": folds, "mean_std": summary}


def render_readout(results: dict[str, Any]) -> str:
    """The Markdown table of :func:`physio_readout` (mean ± std over folds, %)."""
    lines = [f"Linear read-out on unseen people, arm {results['arm']!r}, {len(results['folds'])} folds "
             "(mean ± std over folds, %):", "",
             "| features | accuracy | accuracy, centred per person | identity | identity, centred | identity, off "
             "the training people's identity directions | identity, off as many random directions | directions "
             "removed | chance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, cells in results["mean_std"].items():
        shown = [f"{cells[key][0]:.2f} ± {cells[key][1]:.2f}" if key in cells else "—"
                 for key in ("accuracy", "accuracy_centred", "identity", "identity_centred", "identity_projected",
                             "identity_random_projected")]
        rank = f"{cells['projected_rank'][0]:.1f}" if "projected_rank" in cells else "—"
        lines.append(f"| `{name}` | " + " | ".join(shown) + f" | {rank} | {cells['identity_chance'][0]:.1f} |")
    return "\n".join(lines) + "\n"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("physio-readout", help="linear read-out of saved physio fold models on unseen "
                                                          "people, with and without per-person centring")
    parser.add_argument("run_dirs", nargs="+", type=Path,
                        help="a run of --final_model every_fold, or one training output folder per fold (--fold k)")
    parser.add_argument("--config", default="facet_vlm/configs/physio_prompt_synthetic_small.json")
    parser.add_argument("--arm", default="both", help="the physio bench arm whose data the models were trained on")
    parser.add_argument("--cache_dir", default=None, help="the training runs' --cache_dir (default: the config's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.set_defaults(run=run_readout)


def run_readout(args: argparse.Namespace) -> dict[str, Any]:
    results = physio_readout(args.run_dirs, args.config, args.arm, args.cache_dir)
    print(render_readout(results))
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


__all__ = ["add_parser", "centre_per_person", "fold_model_dirs", "person_centred_readout", "physio_readout",
           "project_off_random", "project_off_training_identity", "render_readout"]
