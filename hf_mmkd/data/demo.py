"""A small SYNTHETIC three-modality dataset: the embedded default of the main job (`train.py` with no arguments).

Each row has a latent score per modality, z_text, z_audio, z_vision ~ N(0, 1), independent; the label is
clip(z_text + z_audio + z_vision, -3, 3) (a MOSI-like regression score). Modality m is a feature sequence of
4..12 steps whose steps carry z_m along a fixed direction (in about 70% of the steps) plus a label-free
nuisance direction and Gaussian noise. So every modality carries a third of the label's variance: a model
with all three can reach ~95% Acc-2, and dropping any one costs accuracy (the dropped third is unrecoverable),
which is what missing-modality methods must show. The data are random numbers: no real corpus is involved.
"""

from __future__ import annotations

import numpy as np

DEMO_DIMS = {"text": 16, "audio": 8, "vision": 8}
DEMO_SIZES = {"train": 600, "validation": 150, "test": 300}
DEMO_LENGTHS = (4, 12)
DEMO_NAME = "hf_mmkd synthetic demo"
DEMO_LABEL_RANGE = (-3.0, 3.0)  # the labels are clipped to it

DEMO_CARD = """# hf_mmkd demo dataset (SYNTHETIC)

**This dataset is synthetic: random numbers, not recordings of people.** It exists so that the main job runs
end to end without downloads, and so that tests can check that a model learns.

- Three modalities as feature sequences: text {text} / audio {audio} / vision {vision} features, {lo}..{hi} steps.
- Label: clip(z_text + z_audio + z_vision, -3, 3), where z_m ~ N(0, 1) is carried only by modality m; dropping
  any modality loses a third of the label's variance.
- Splits: {sizes}; generator seed {seed}. Built by `hf_mmkd.data.demo.make_demo_dataset`.
"""


def _split(rng: np.random.Generator, n: int, name: str, directions: dict, dims: dict, lengths: tuple[int, int]):
    z = rng.standard_normal((n, 3))  # (N, 3): one latent score per modality
    labels = np.clip(z.sum(1), *DEMO_LABEL_RANGE).astype(np.float32)
    cols = {"id": [f"demo_{name}_{i}" for i in range(n)]}
    for j, m in enumerate(dims):
        signal, nuisance = directions[m]
        seqs = []
        for i in range(n):
            steps = int(rng.integers(lengths[0], lengths[1] + 1))
            carries = rng.random(steps) < 0.7  # (steps,) which steps carry the score
            carries[rng.integers(steps)] = True  # at least one does
            x = (carries[:, None] * z[i, j] * signal[None, :]  # (steps, D)
                 + rng.standard_normal() * nuisance[None, :]
                 + 0.5 * rng.standard_normal((steps, len(signal))))
            seqs.append(x.astype(np.float32))
        cols[f"{m}_features"] = seqs
        cols[f"has_{m}"] = [True] * n
    cols["label"] = labels.tolist()
    return cols


def make_demo_dataset(sizes: dict | None = None, dims: dict | None = None, lengths: tuple[int, int] = DEMO_LENGTHS,
                      seed: int = 0):
    """The synthetic demo `DatasetDict` (train/validation/test) in the prepared schema; deterministic in `seed`."""
    from datasets import Array2D, Dataset, DatasetDict, Features, Value

    sizes = dict(DEMO_SIZES if sizes is None else sizes)
    dims = dict(DEMO_DIMS if dims is None else dims)
    rng = np.random.default_rng(seed)
    directions = {}
    for m, d in dims.items():
        basis, _ = np.linalg.qr(rng.standard_normal((d, 2)))  # two orthonormal directions in R^d
        directions[m] = (2.0 * basis[:, 0], 1.5 * basis[:, 1])
    spec = {"id": Value("string")}
    spec.update({f"{m}_features": Array2D(shape=(None, d), dtype="float32") for m, d in dims.items()})
    spec.update({f"has_{m}": Value("bool") for m in dims})
    spec["label"] = Value("float32")
    features = Features(spec)
    return DatasetDict({
        name: Dataset.from_dict(_split(rng, n, name, directions, dims, lengths), features=features)
        for name, n in sizes.items()
    })


def demo_spec(dataset_dict, seed: int = 0):
    """The `DatasetSpec` of a demo `DatasetDict` (made by `make_demo_dataset(..., seed=seed)`): regression scores
    in [-3, 3] with the default neutral band. `make_demo.py` writes it; `train.py` and `hf-mmkd evaluate` use it
    for `--dataset demo`."""
    from hf_mmkd.data.spec import build_spec

    return build_spec(dataset_dict, name=DEMO_NAME, task="regression", label_range=DEMO_LABEL_RANGE,
                      source=f"synthetic: hf_mmkd.data.demo.make_demo_dataset(seed={seed}), no real recordings")


def demo_card(sizes: dict | None = None, dims: dict | None = None, lengths=DEMO_LENGTHS, seed: int = 0) -> str:
    """The dataset card body for the demo (clearly labelled synthetic)."""
    dims = dict(DEMO_DIMS if dims is None else dims)
    sizes = dict(DEMO_SIZES if sizes is None else sizes)
    return DEMO_CARD.format(**dims, lo=lengths[0], hi=lengths[1], seed=seed,
                            sizes=" / ".join(f"{k} {v}" for k, v in sizes.items()))
