"""Macro-F1: the unweighted mean of per-class F1 scores.

The mean runs over every class in ``range(num_labels)`` when ``num_labels`` is given, otherwise over the classes
that occur in the predictions or the references (scikit-learn's default). A class that is never predicted and never
true has no F1 and is skipped; a class with support but no correct prediction scores 0.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Macro-F1 = mean_c 2 TP_c / (2 TP_c + FP_c + FN_c) (a local module; the Hub is not needed)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    num_labels (int, optional): number of classes; classes never seen in either list are skipped.
Returns:
    macro_f1 (float): in [0, 1].
"""


class MacroF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = range(num_labels) if num_labels is not None else np.union1d(predictions, references)
        scores = []
        for c in classes:
            true_positive = np.sum((predictions == c) & (references == c))
            false_positive = np.sum((predictions == c) & (references != c))
            false_negative = np.sum((predictions != c) & (references == c))
            denominator = 2 * true_positive + false_positive + false_negative
            if denominator > 0:
                scores.append(2 * true_positive / denominator)
        return {"macro_f1": float(np.mean(scores)) if scores else float("nan")}
