"""Per-feature standardisation of feature sequences, fitted on the training split only.

Feature files are often unnormalised (the MOSI openSMILE audio spans -11..376, MMMO COVAREP +-255), which
stalls a small Transformer. The statistics are a JSON-able dict `{"audio": {"mean": [...], "std": [...]}}`
that is stored in `MMKDConfig.feature_standardization`; the model applies whatever its config holds to its raw
feature inputs (`MMKDModel.standardize_features`, the one place that does), so training, evaluation, a direct
call, the processor and the pipeline all see the same inputs. This module only fits the statistics.
"""

from __future__ import annotations

import numpy as np

from hf_mmkd.data.prepared import MODALITIES

MIN_STD = 1e-6  # a constant feature keeps std 1 (it is only centred) instead of blowing up


class FeatureStandardizer:
    """Statistics of per-feature (last-axis) z-scoring `(x - mean) / std`, over every valid step of every row."""

    def __init__(self, stats: dict | None = None):
        self.stats = {m: {"mean": list(map(float, s["mean"])), "std": list(map(float, s["std"]))}
                      for m, s in (stats or {}).items()}

    @classmethod
    def fit(cls, train_split, modalities=MODALITIES) -> "FeatureStandardizer":
        """Fit on a training `Dataset` with `<m>_features` columns; rows with `has_<m>` False are skipped."""
        stats = {}
        for m in modalities:
            col = f"{m}_features"
            if col not in train_split.column_names:
                continue
            total, total_sq, count = None, None, 0
            has_id = "id" in train_split.column_names
            view = train_split.select_columns([col, f"has_{m}"] + (["id"] if has_id else [])).with_format("numpy")
            for n, row in enumerate(view):
                x = row[col]
                if not row[f"has_{m}"] or x is None or np.ndim(x) != 2 or len(x) == 0:
                    continue
                x = x.astype(np.float64)  # (len, D)
                if not np.isfinite(x).all():
                    raise ValueError(f"train row {str(row['id']) if has_id else n!r}: {col} contains NaN or inf values "
                                     "(prepare_mmsa.py sets them to 0; fix the dataset)")
                total = x.sum(0) if total is None else total + x.sum(0)
                total_sq = (x ** 2).sum(0) if total_sq is None else total_sq + (x ** 2).sum(0)
                count += len(x)
            if count == 0:
                continue  # modality absent from train (e.g. MMMO text): nothing to fit, leave it unscaled
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
            std = np.where(std < MIN_STD, 1.0, std)
            stats[m] = {"mean": mean.tolist(), "std": std.tolist()}
        return cls(stats)

    def to_dict(self) -> dict:
        """The JSON-able statistics, for `MMKDConfig.feature_standardization`."""
        return {m: {"mean": list(s["mean"]), "std": list(s["std"])} for m, s in self.stats.items()}
