"""UAR, unweighted average recall: the mean of the per-class recalls (balanced accuracy).

Classes absent from the references have no recall and are left out of the mean (as scikit-learn's
``balanced_accuracy_score`` does), so a fold missing a class is not penalised for it.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "UAR = mean over classes present in the references of TP_c / support_c (a local module)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    uar (float): in [0, 1].
"""


class UAR(evaluate.Metric):
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
            return {"uar": float("nan")}
        recalls = [np.mean(predictions[references == c] == c) for c in np.unique(references)]
        return {"uar": float(np.mean(recalls))}
