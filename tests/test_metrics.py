"""The metrics (all from one confusion matrix) against values computed by hand."""

import numpy as np
import pytest

from facet_vlm.evaluation import compute_metrics, format_results_table, pooled_metrics, summarize_folds

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


def test_uf1_of_pooled_predictions_matches_a_hand_computed_value():
    references, predictions = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    matrix = compute_metrics(predictions, references, num_labels=4)["confusion_matrix"]
    # F1 class 0: 2*2/(4+0+1) = 0.8; class 1: 2*1/(2+1+1) = 0.5; class 2: 2*1/(2+1+0) = 2/3; class 3 absent.
    pooled = pooled_metrics(matrix)
    assert pooled["uf1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert pooled["num_samples"] == 6 and pooled["accuracy"] == pytest.approx(4 / 6)
    assert pooled_metrics(compute_metrics([1, 1], [0, 0], num_labels=2)["confusion_matrix"])["uf1"] == 0.0


def test_class_ids_outside_the_label_set_are_refused():
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        compute_metrics([0, 3], [0, 1], num_labels=3)
