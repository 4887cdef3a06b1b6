"""Data sets unlike CMU-MOSI, built in the tests: MMSA-layout pickles with any label type and modality layout.

`write_mmsa_pickle(path, ...)` writes a small pickle in the layout `dataset_scripts/prepare_mmsa.py` reads. Each
row has a latent score z ~ N(0, 1); every modality present carries z along a fixed direction (plus noise), and
the label is a function of z: a score on the label range (regression) or the quantile bin of z (classes), so a
model can learn it. Rows can lack a modality (its length is 0), a modality can be absent from a split (its key is
missing), and rows can have no modality at all.
"""

from __future__ import annotations

import pickle

import numpy as np

SPLITS = ("train", "valid", "test")
DIMS = {"text": 6, "audio": 5, "vision": 4}


def write_mmsa_pickle(path, *, task="regression", label_range=(0.0, 10.0), num_classes=3,
                      modalities=("text", "audio", "vision"), sizes=(40, 12, 16), absent=(), empty_rows=None,
                      both_labels=False, steps=6, seed=0):
    """Write the pickle and return the ids of the rows that have no modality, per pickle split.

    absent: (split, modality) pairs whose key is left out of that split; empty_rows: {split: n} rows (the first n)
    whose every modality has length 0; both_labels: also write the other kind of labels (as MMSA's files do).
    """
    rng = np.random.default_rng(seed)
    directions = {m: rng.standard_normal(d) for m, d in DIMS.items()}
    data, empty_ids = {}, {}
    for split, n in zip(SPLITS, sizes):
        z = rng.standard_normal(n)
        arrays = {"id": np.array([f"{split}_{i}" for i in range(n)], dtype=object)}
        lengths = rng.integers(2, steps + 1, n)
        k = (empty_rows or {}).get(split, 0)
        empty_ids[split] = [f"{split}_{i}" for i in range(k)]
        for m in modalities:
            if (split, m) in absent:
                continue
            x = z[:, None, None] * directions[m][None, None, :] + 0.3 * rng.standard_normal((n, steps, DIMS[m]))
            m_lengths = lengths.copy()
            m_lengths[:k] = 0
            x[np.arange(steps)[None, :] >= m_lengths[:, None]] = 0.0  # right padding
            arrays[m] = x.astype(np.float32)
            arrays[f"{m}_lengths"] = m_lengths
        lo, hi = label_range
        score = (lo + (hi - lo) / (1 + np.exp(-1.5 * z))).astype(np.float32)
        edges = np.quantile(np.random.default_rng(1).standard_normal(10_000), np.linspace(0, 1, num_classes + 1)[1:-1])
        classes = np.searchsorted(edges, z).astype(np.float32)  # MMSA stores class ids as floats
        if task == "regression" or both_labels:
            arrays["regression_labels"] = score
        if task == "classification" or both_labels:
            arrays["classification_labels"] = classes
        data[split] = arrays
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return empty_ids
