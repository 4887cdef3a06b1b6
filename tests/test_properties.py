"""Property-based tests (hypothesis) of the missing-modality simulator, and of the metrics beyond those in
tests/test_metrics.py (which already covers perfect predictions, clip-range invariance, Has0/Non0 relations,
permutation invariance and bounds).

Batches are random feature/token batches in the collator's layout: right-padded sequences, a row without a
modality has length 0 and `modality_mask` False, every row has at least one modality, `row_key` from ids.
tests/test_missing_protocols.py checks each protocol's statistics (drop fractions, pattern frequencies) on
large fixed batches; here the invariants must hold for every batch, protocol and rate hypothesis finds.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_mmkd.data.missing import MODALITIES, P4_SHARES, MissingModalitySimulator, row_key
from hf_mmkd.metrics import classification_metrics, regression_metrics

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNK, CLS, SEP = 100, 101, 102
DIMS = (4, 3, 2)


@st.composite
def batches(draw, tokens=None):
    """A collated batch of 1..8 rows, 1..7 steps, random lengths/availability; text as tokens or features."""
    use_tokens = draw(st.booleans()) if tokens is None else tokens
    n, steps = draw(st.integers(1, 8)), draw(st.integers(2 if use_tokens else 1, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, steps + 1, size=(n, 3))
    if use_tokens:
        lengths[:, 0] = np.where(lengths[:, 0] > 0, np.maximum(lengths[:, 0], 2), 0)  # [CLS] ... [SEP]
    mask = (rng.random((n, 3)) < 0.75) & (lengths > 0)
    for b in np.nonzero(~mask.any(1))[0]:  # every row keeps at least one modality
        j = int(rng.integers(3))
        lengths[b, j] = max(lengths[b, j], 2 if (use_tokens and j == 0) else 1)
        mask[b, j] = True
    lengths[~mask] = 0
    batch = {}
    valid = torch.arange(steps)[None, :] < torch.as_tensor(lengths)[:, :, None].transpose(0, 1)  # (3, n, steps)
    for i, (m, d) in enumerate(zip(MODALITIES, DIMS)):
        if m == "text" and use_tokens:
            ids = torch.as_tensor(rng.integers(1000, 2000, (n, steps)))
            ids[:, 0] = CLS
            for b in range(n):
                if lengths[b, 0]:
                    ids[b, lengths[b, 0] - 1] = SEP
            ids[~valid[0]] = 0
            batch["input_ids"], batch["attention_mask"] = ids, valid[0].long()
        else:
            x = torch.as_tensor(rng.standard_normal((n, steps, d)) + 5.0, dtype=torch.float32)  # never 0
            x[~valid[i]] = 0.0
            batch[f"{m}_features"], batch[f"{m}_lengths"] = x, torch.as_tensor(lengths[:, i])
    batch["modality_mask"] = torch.as_tensor(mask)
    batch["labels"] = torch.as_tensor(rng.uniform(-3, 3, n), dtype=torch.float32)
    batch["row_key"] = torch.tensor([row_key(f"{seed}-{b}") for b in range(n)])
    return batch


rates = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
seeds = st.integers(0, 2**31 - 1)
eval_simulators = st.one_of(
    st.builds(lambda r, s: MissingModalitySimulator("p1", rate=r, seed=s), rates, seeds),
    st.builds(lambda r, s: MissingModalitySimulator("p2", rate=r, seed=s), rates, seeds),
    st.builds(lambda r, s: MissingModalitySimulator("p3", rate=r, seed=s), rates, seeds),
    st.builds(lambda r, s: MissingModalitySimulator("p4", rate=r, seed=s), st.sampled_from(sorted(P4_SHARES)), seeds),
)
train_simulators = st.one_of(
    st.builds(lambda s: MissingModalitySimulator("p2", training=True, seed=s), seeds),
    st.builds(lambda r, s: MissingModalitySimulator("p3", rate=r, training=True, seed=s), st.none() | rates, seeds),
    st.builds(lambda r, s: MissingModalitySimulator("p4", rate=r, training=True, seed=s),
              st.sampled_from(sorted(P4_SHARES)), seeds),
    st.builds(lambda s: MissingModalitySimulator("p5", training=True, seed=s), seeds),
)


def inputs_of(batch, i):
    """(x, per-row lengths) of modality i, whatever its kind."""
    m = MODALITIES[i]
    if m == "text" and "input_ids" in batch:
        return batch["input_ids"], batch["attention_mask"].sum(1)
    return batch[f"{m}_features"], batch[f"{m}_lengths"]


@FAST
@given(batch=batches(), simulator=st.one_of(eval_simulators, train_simulators))
def test_simulator_invariants(batch, simulator):
    before = {k: v.clone() for k, v in batch.items()}
    out = simulator(batch)
    for k, v in before.items():  # the input batch is never mutated
        assert torch.equal(batch[k], v), k
    had, has = batch["modality_mask"], out["modality_mask"]
    assert not (has & ~had).any()  # never adds a modality
    assert has.any(1).all()  # never leaves a row without a modality
    for i, m in enumerate(MODALITIES):
        x_in, len_in = inputs_of(batch, i)
        x_out, len_out = inputs_of(out, i)
        dropped = out[f"{m}_dropped"]
        valid = torch.arange(x_in.shape[1])[None, :] < len_in[:, None]
        assert not (dropped & ~valid).any()  # padding is never "dropped"
        lost = had[:, i] & ~has[:, i]
        # a lost modality: length 0, inputs zeroed, every valid step marked dropped
        assert (len_out[lost] == 0).all() and (x_out[lost] == 0).all()
        assert torch.equal(dropped[lost], valid[lost])
        kept = ~lost
        assert torch.equal(len_out[kept], len_in[kept])  # step drops keep lengths
        step_drop, step_keep = dropped & kept[:, None], valid & ~dropped & kept[:, None]
        assert torch.equal(x_out[step_keep], x_in[step_keep])  # kept steps unchanged
        if x_in.dtype == torch.long:  # tokens: dropped ones become [UNK]; [CLS] and the final [SEP] stay
            assert (x_out[step_drop] == UNK).all()
            assert not dropped[kept & (len_in > 0), 0].any()
            rows = torch.nonzero(kept & (len_in > 0)).squeeze(1)
            assert not dropped[rows, len_in[rows] - 1].any()
        else:
            assert (x_out[step_drop] == 0).all()


@FAST
@given(batch=batches(), simulator=eval_simulators, order=st.randoms(use_true_random=False))
def test_evaluation_draws_depend_only_on_the_row(batch, simulator, order):
    """Evaluation masks are keyed on row_key: the same for a row in any batch order and batch size."""
    whole = simulator(batch)
    n = len(batch["row_key"])
    idx = order.sample(range(n), order.randint(1, n))  # a random subset in a random order
    part = simulator({k: v[idx] for k, v in batch.items()})
    assert torch.equal(part["modality_mask"], whole["modality_mask"][idx])
    for i, m in enumerate(MODALITIES):
        assert torch.equal(part[f"{m}_dropped"], whole[f"{m}_dropped"][idx]), m
        assert torch.equal(inputs_of(part, i)[0], inputs_of(whole, i)[0][idx]), m
    again = simulator(batch)  # and deterministic across calls
    for k in whole:
        assert torch.equal(again[k], whole[k]), k


@FAST
@given(batch=batches(), protocol=st.sampled_from(["p1", "p2", "p3"]), seed=seeds)
def test_rate_zero_changes_nothing(batch, protocol, seed):
    out = MissingModalitySimulator(protocol, rate=0.0, seed=seed)(batch)
    for k, v in batch.items():
        assert torch.equal(out[k], v), k
    assert not any(out[f"{m}_dropped"].any() for m in MODALITIES)


@FAST
@given(batch=batches(), protocol=st.sampled_from(["p1", "p2", "p3"]), low=rates, high=rates, seed=seeds)
def test_dropped_steps_grow_with_the_rate(batch, protocol, low, high, seed):
    """One uniform per step for every rate: with one seed, the drop set at a lower rate is inside the higher one's."""
    low, high = min(low, high), max(low, high)
    a = MissingModalitySimulator(protocol, rate=low, seed=seed)(batch)
    b = MissingModalitySimulator(protocol, rate=high, seed=seed)(batch)
    for m in MODALITIES:
        assert not (a[f"{m}_dropped"] & ~b[f"{m}_dropped"]).any(), m


@FAST
@given(batch=batches(), simulator=train_simulators)
def test_training_draws_are_reproducible_from_the_seed(batch, simulator):
    twin = MissingModalitySimulator(simulator.protocol, simulator.rate, training=True, seed=simulator.seeds)
    for _ in range(2):  # call after call, the same sequence of draws
        a, b = simulator(batch), twin(batch)
        for k in a:
            assert torch.equal(a[k], b[k]), k


@FAST
@given(batch=batches(), availability=st.sampled_from(["l", "a", "v", "la", "lv", "av", "lav"]))
def test_fixed_availability_keeps_exactly_the_set_or_says_which_rows_it_empties(batch, availability):
    keep = torch.tensor([c in availability for c in "lav"])
    simulator = MissingModalitySimulator("p3", availability=availability)
    expected = batch["modality_mask"] & keep
    if not expected.any(1).all():
        with pytest.raises(ValueError, match="leaves row"):
            simulator(batch)
        return
    assert torch.equal(simulator(batch)["modality_mask"], expected)


# ---- metrics ------------------------------------------------------------------------------------------------

finite = st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=32)
pairs = st.integers(2, 30).flatmap(
    lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n), st.lists(finite, min_size=n, max_size=n)))


def same(a, b):
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-9) for k in a)


@FAST
@given(pair=pairs, copies=st.integers(2, 4))
def test_regression_metrics_invariant_to_repeating_the_data(pair, copies):
    p, y = (np.asarray(v, np.float64) for v in pair)
    assert same(regression_metrics(p, y), regression_metrics(np.tile(p, copies), np.tile(y, copies)))


@FAST
@given(pair=pairs, scale=st.floats(0.1, 10), shift=st.floats(-2, 2))
def test_correlation_invariant_to_a_positive_affine_map_of_the_predictions(pair, scale, shift):
    p, y = (np.asarray(v, np.float64) for v in pair)
    a, b = regression_metrics(p, y)["Corr"], regression_metrics(scale * p + shift, y)["Corr"]
    if np.ptp(p) > 1e-3 and np.ptp(y) > 1e-3:
        assert b == pytest.approx(a, abs=1e-6)


@FAST
@given(labels=st.lists(st.integers(0, 2), min_size=2, max_size=30), seed=st.integers(0, 2**16))
def test_classification_accuracy_of_one_hot_logits(labels, seed):
    """Logits peaking at the label give accuracy 1; peaking at a wrong class on k rows give 1 - k/n."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < 0.3
    predicted = np.where(wrong, (y + 1) % 3, y)
    logits = np.eye(3)[predicted] * 5.0 + rng.uniform(-1, 1, (len(y), 3))
    m = classification_metrics(logits, y)
    assert m["Accuracy"] == m["WA"] == pytest.approx(1.0 - wrong.mean())
