"""WAR, weighted average recall: per-class recall weighted by class support, which equals overall accuracy.

FER papers report it next to UAR because the two differ exactly when classes are imbalanced.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "WAR = sum_c support_c * recall_c / N = overall accuracy (a local module; the Hub is not needed)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    war (float): in [0, 1].
"""


class WAR(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            return {"war": float("nan")}
        classes, support = np.unique(references, return_counts=True)
        recalls = np.array([np.mean(predictions[references == c] == c) for c in classes])
        return {"war": float(np.sum(support * recalls) / len(references))}
