"""Confusion matrix: entry [i, j] counts the samples of true class i predicted as class j."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Confusion matrix with rows = true class and columns = predicted class (a local module)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    num_labels (int, optional): matrix size; defaults to 1 + the largest id seen.
Returns:
    confusion_matrix (list of list of int): (num_labels, num_labels) counts.
"""


class ConfusionMatrix(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if num_labels is None:
            num_labels = int(max(predictions.max(initial=-1), references.max(initial=-1))) + 1
        counts = np.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
        return {"confusion_matrix": counts.reshape(num_labels, num_labels).tolist()}
