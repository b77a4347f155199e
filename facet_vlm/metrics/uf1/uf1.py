"""UF1, unweighted F1: the micro-expression recognition metric (MEGC), the mean over classes of per-class F1.

``UF1 = (1 / C) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c)``. Under leave-one-subject-out the counts TP_c, FP_c and
FN_c are summed over all folds, i.e. UF1 is computed once on the pooled predictions of every test subject, not
averaged over folds (a fold usually holds few clips and misses classes). The mean runs over ``range(num_labels)``
when it is given; a class that is neither predicted nor true has no F1 and is left out of the mean (otherwise over
the classes that occur in the predictions or the references).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "UF1 = mean_c 2 TP_c / (2 TP_c + FP_c + FN_c) over pooled predictions (a local module)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids (pooled over every leave-one-subject-out fold).
    references (list of int): true class ids.
    num_labels (int, optional): number of classes; classes never predicted nor true are skipped.
Returns:
    uf1 (float): in [0, 1].
"""


class UF1(evaluate.Metric):
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
        return {"uf1": float(np.mean(scores)) if scores else float("nan")}
