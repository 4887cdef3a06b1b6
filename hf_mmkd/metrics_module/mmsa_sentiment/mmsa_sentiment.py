# Local `evaluate` module wrapping hf_mmkd.metrics (the MMSA metricsTop.py formulas); loads offline:
#     evaluate.load(hf_mmkd.metrics.evaluate_module_path(), config_name="mosi")
# One import per line: evaluate's dependency scanner misreads `import a, b`.
"""MMSA sentiment metrics (MOSI/MOSEI, SIMS, classification) as an `evaluate.Metric`."""

import datasets
import evaluate
import numpy as np

from hf_mmkd.metrics import classification_metrics
from hf_mmkd.metrics import regression_metrics
from hf_mmkd.metrics import sims_metrics

_CITATION = """\
@misc{mmsa,
  title = {MMSA: a unified framework for multimodal sentiment analysis},
  author = {Mao, Huisheng and Yuan, Ziqi and Xu, Hua and Yu, Wenmeng and Liu, Yihe and Gao, Kai},
  howpublished = {https://github.com/thuiar/MMSA},
  note = {metrics from src/MMSA/utils/metricsTop.py}
}
"""

_DESCRIPTION = """\
Metrics of thuiar/MMSA utils/metricsTop.py. Config "mosi" / "mosei": Has0 and Non0 Acc-2 and weighted F1,
Acc-3/5/7 by clip-and-round, MAE, Pearson Corr. Config "sims": Acc-2/3/5 on the CH-SIMS bins, weighted F1,
MAE, Corr on values clipped to [-1, 1]. Config "classification": accuracy, weighted and per-class F1, WA, UA.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: regression scores (mosi, mosei, sims) or class ids (classification).
    references: gold scores or class ids.
    label_names: classification only, names used for the per-class F1 keys.
Returns:
    dict keyed as in MMSA, e.g. Has0_acc_2, Non0_F1_score, Mult_acc_7, MAE, Corr.
Examples:
    >>> metric = evaluate.load(hf_mmkd.metrics.evaluate_module_path(), config_name="mosi")
    >>> metric.compute(predictions=[1.2, -0.4], references=[1.0, -1.0])["Has0_acc_2"]
    1.0
"""

_REGRESSION = {"mosi": regression_metrics, "mosei": regression_metrics, "sims": sims_metrics}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MmsaSentiment(evaluate.Metric):
    def _info(self):
        name = self.config_name if self.config_name != "default" else "mosi"
        if name not in _REGRESSION and name != "classification":
            raise ValueError(f"unknown config {self.config_name!r}; use mosi, mosei, sims or classification")
        dtype = "int64" if name == "classification" else "float32"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            reference_urls=["https://github.com/thuiar/MMSA/blob/master/src/MMSA/utils/metricsTop.py"],
        )

    def _compute(self, predictions, references, label_names=None):
        name = self.config_name if self.config_name != "default" else "mosi"
        if name == "classification":
            return classification_metrics(predictions, references, label_names=label_names)
        if label_names is not None:
            raise ValueError(f"label_names only apply to config 'classification', not {name!r}")
        # evaluate hands back lists of Python floats; float32 arrays keep MMSA's float32 bin comparisons.
        return _REGRESSION[name](np.asarray(predictions, dtype=np.float32), np.asarray(references, dtype=np.float32))
