"""The local evaluate metrics against a confusion matrix written down by hand."""

import numpy as np
import pytest

from facet_vlm.evaluation import compute_metrics, format_results_table, load_metric, summarize_folds

# Rows = true class, columns = predicted class; imbalanced on purpose so UAR and WAR differ, class 3 never predicted.
HAND_MATRIX = np.array([
    [5, 1, 0, 0],
    [2, 2, 0, 0],
    [0, 1, 9, 0],
    [1, 0, 1, 0],
])


def expand(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and references whose confusion matrix is `matrix`, in shuffled order."""
    references, predictions = [], []
    for true_class, row in enumerate(matrix):
        for predicted_class, count in enumerate(row):
            references += [true_class] * int(count)
            predictions += [predicted_class] * int(count)
    order = np.random.default_rng(0).permutation(len(references))
    return np.array(predictions)[order], np.array(references)[order]


def test_metrics_match_hand_computed_confusion_matrix():
    predictions, references = expand(HAND_MATRIX)
    results = compute_metrics(predictions, references, num_labels=4)

    assert np.array_equal(results["confusion_matrix"], HAND_MATRIX)
    total = HAND_MATRIX.sum()
    assert results["accuracy"] == pytest.approx(np.trace(HAND_MATRIX) / total)
    # WAR: per-class recall weighted by support is the accuracy.
    recalls = np.diag(HAND_MATRIX) / HAND_MATRIX.sum(axis=1)
    assert results["war"] == pytest.approx(np.sum(HAND_MATRIX.sum(axis=1) * recalls) / total)
    assert results["war"] == pytest.approx(results["accuracy"])
    assert results["uar"] == pytest.approx((5 / 6 + 2 / 4 + 9 / 10 + 0 / 2) / 4)
    # F1_c = 2 TP / (2 TP + FP + FN), read off the matrix: FP = column sum - TP, FN = row sum - TP.
    f1 = [2 * 5 / (10 + 3 + 1), 2 * 2 / (4 + 2 + 2), 2 * 9 / (18 + 1 + 1), 0.0]
    assert results["macro_f1"] == pytest.approx(np.mean(f1))
    assert results["uar"] != pytest.approx(results["war"])


def test_uar_skips_classes_absent_from_references_and_f1_covers_label_set():
    predictions, references = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0])
    results = compute_metrics(predictions, references, num_labels=3)
    assert results["uar"] == pytest.approx((2 / 3 + 1) / 2)
    assert results["macro_f1"] == pytest.approx((2 * 2 / (4 + 0 + 1) + 2 * 1 / (2 + 1 + 0)) / 2)
    assert np.asarray(results["confusion_matrix"]).shape == (3, 3)


def test_summary_over_folds_mean_std_and_table():
    folds = [compute_metrics(*expand(HAND_MATRIX), num_labels=4), compute_metrics([0, 1, 2, 3], [0, 1, 2, 3], 4)]
    summary = summarize_folds(folds)
    accuracies = [folds[0]["accuracy"], 1.0]
    assert summary["accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["accuracy_std"] == pytest.approx(np.std(accuracies))
    assert summary["accuracy_per_fold"] == pytest.approx(accuracies)
    assert np.array_equal(summary["confusion_matrix"], HAND_MATRIX + np.eye(4, dtype=int))
    table = format_results_table(summary)
    assert "mean" in table and f"{100 * summary['uar']:.2f}" in table


def test_unknown_metric_is_rejected():
    with pytest.raises(KeyError, match="unknown metric"):
        load_metric("bleu")
