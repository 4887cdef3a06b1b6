# Local `evaluate` module wrapping hf_mmkd.metrics (the MMSA metricsTop.py formulas); loads offline:
#     evaluate.load(hf_mmkd.metrics.evaluate_module_path(), config_name="mmsa_pm3")
# One import per line: evaluate's dependency scanner misreads `import a, b`.
"""MMSA sentiment metrics as an `evaluate.Metric`; one config per metric set of hf_mmkd.data.spec.METRIC_SETS."""

import datasets
import evaluate
import numpy as np

from hf_mmkd.metrics import metric_fn

_CITATION = """\
@misc{mmsa,
  title = {MMSA: a unified framework for multimodal sentiment analysis},
  author = {Mao, Huisheng and Yuan, Ziqi and Xu, Hua and Yu, Wenmeng and Liu, Yihe and Gao, Kai},
  howpublished = {https://github.com/thuiar/MMSA},
  note = {metrics from src/MMSA/utils/metricsTop.py}
}
"""

_DESCRIPTION = """\
Metrics of thuiar/MMSA utils/metricsTop.py, one config per metric set (the data-set spec's `metric_set`):
"mmsa_pm3" (scores in [-3, 3]): Has0 and Non0 Acc-2 and weighted F1, Acc-3/5/7 by clip-and-round, MAE, Pearson
Corr. "mmsa_pm1" (scores in [-1, 1]): Acc-2/3/5 on MMSA's bins, weighted F1, MAE, Corr on values clipped to
[-1, 1]. "classification": accuracy, weighted and per-class F1, WA, UA. "generic_regression" (any other scale):
sign accuracy and F1 relative to a neutral band, 3-class band accuracy, MAE, Corr. Beside MMSA's keys (values
unchanged): balanced sign accuracy with each Acc-2 of the regression sets (Has0_bal_acc_2, Non0_bal_acc_2,
Mult_bal_acc_2, Sign_bal_acc_2: mean of the recalls on the two signs, any constant predictor scores 0.5) and
Macro_F1 / Balanced_acc for classification.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: regression scores, or class ids (classification).
    references: gold scores or class ids.
    label_names: classification only, names used for the per-class F1 keys.
    neutral_band: generic_regression only, [a, b] (default [0, 0]).
Returns:
    dict keyed as in MMSA, e.g. Has0_acc_2, Non0_F1_score, Mult_acc_7, MAE, Corr.
Examples:
    >>> metric = evaluate.load(hf_mmkd.metrics.evaluate_module_path(), config_name="mmsa_pm3")
    >>> metric.compute(predictions=[1.2, -0.4], references=[1.0, -1.0])["Has0_acc_2"]
    1.0
"""

_SETS = ("mmsa_pm3", "mmsa_pm1", "classification", "generic_regression")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MmsaSentiment(evaluate.Metric):
    def _info(self):
        name = self.config_name if self.config_name != "default" else "mmsa_pm3"
        if name not in _SETS:
            raise ValueError(f"unknown config {self.config_name!r}; use one of {', '.join(_SETS)}")
        dtype = "int64" if name == "classification" else "float32"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            reference_urls=["https://github.com/thuiar/MMSA/blob/master/src/MMSA/utils/metricsTop.py"],
        )

    def _compute(self, predictions, references, label_names=None, neutral_band=None):
        name = self.config_name if self.config_name != "default" else "mmsa_pm3"
        if neutral_band is not None and name != "generic_regression":
            raise ValueError(f"neutral_band only applies to config 'generic_regression', not {name!r}")
        fn = metric_fn(name, label_names=label_names, neutral_band=neutral_band)
        if name == "classification":
            return fn(predictions, references)
        # evaluate hands back lists of Python floats; float32 arrays keep MMSA's float32 bin comparisons.
        return fn(np.asarray(predictions, dtype=np.float32), np.asarray(references, dtype=np.float32))
