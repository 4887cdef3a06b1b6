"""Missing-modality protocols P1-P5 (docs/protocols.md) on collated batches."""

import math

import numpy as np
import pytest
import torch

from hf_mmkd.data.missing import (
    P4_SHARES,
    P5_WEIGHTS,
    PATTERNS,
    WAVEFORM_CHUNK,
    MissingModalitySimulator,
    model_inputs,
    row_key,
)

UNK, CLS, SEP = 100, 101, 102


def feature_batch(n=400, steps=50, dims=(6, 5, 4), vision=True, seed=0, min_len=None):
    """Feature batch with lengths in [min_len, steps] (default: all full) and row keys from ids."""
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for m, d in zip(("text", "audio", "vision"), dims):
        if m == "vision" and not vision:
            continue
        lengths = (torch.full((n,), steps) if min_len is None
                   else torch.randint(min_len, steps + 1, (n,), generator=g))
        x = torch.randn(n, steps, d, generator=g) + 5.0  # never exactly 0
        x[torch.arange(steps)[None, :] >= lengths[:, None]] = 0.0
        batch[f"{m}_features"], batch[f"{m}_lengths"] = x, lengths
    mask = torch.ones(n, 3, dtype=torch.bool)
    if not vision:
        mask[:, 2] = False
    batch["modality_mask"] = mask
    batch["labels"] = torch.zeros(n)
    batch["row_key"] = torch.tensor([row_key(f"row{i}") for i in range(n)])
    return batch


def token_batch(n=300, max_len=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len + 1, (n,), generator=g)
    ids = torch.randint(1000, 2000, (n, max_len), generator=g)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(n), lengths - 1] = SEP
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "modality_mask": torch.tensor([[True, False, False]] * n),
            "row_key": torch.tensor([row_key(f"t{i}") for i in range(n)])}


def subset(batch, idx):
    return {k: v[idx] for k, v in batch.items()}


# ---- P1 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_p1_feature_drop_fraction_matches_rate(rate):
    batch = feature_batch(min_len=5)
    out = MissingModalitySimulator("p1", rate=rate)(batch)
    for m in ("text", "audio", "vision"):
        valid = torch.arange(50)[None, :] < batch[f"{m}_lengths"][:, None]
        dropped = out[f"{m}_dropped"]
        frac = dropped[valid].float().mean().item()
        # ~11k valid steps: binomial sd <= 0.005; 0.02 is 4 sd
        assert abs(frac - rate) < 0.02, (m, frac)
        assert not dropped[~valid].any()  # padding is never "dropped"
        assert torch.all(out[f"{m}_features"][dropped] == 0)
        kept = valid & ~dropped
        assert torch.equal(out[f"{m}_features"][kept], batch[f"{m}_features"][kept])
        assert torch.equal(out[f"{m}_lengths"], batch[f"{m}_lengths"])  # step drops keep lengths
    assert torch.equal(out["modality_mask"], batch["modality_mask"])


def test_p1_tokens_become_unk_and_cls_sep_are_kept():
    batch = token_batch()
    out = MissingModalitySimulator("p1", rate=0.6)(batch)
    lengths = batch["attention_mask"].sum(1)
    rows = torch.arange(len(lengths))
    assert torch.all(out["input_ids"][:, 0] == CLS)
    assert torch.all(out["input_ids"][rows, lengths - 1] == SEP)
    assert not out["text_dropped"][:, 0].any() and not out["text_dropped"][rows, lengths - 1].any()
    dropped = out["text_dropped"]
    assert torch.all(out["input_ids"][dropped] == UNK)
    assert torch.equal(out["input_ids"][~dropped], batch["input_ids"][~dropped])
    assert torch.equal(out["attention_mask"], batch["attention_mask"])
    interior = batch["attention_mask"].bool().clone()
    interior[:, 0] = False
    interior[rows, lengths - 1] = False
    frac = dropped[interior].float().mean().item()
    assert abs(frac - 0.6) < 0.03, frac
    # at r = 1 every interior token is dropped, still only [CLS]/[SEP] survive
    full = MissingModalitySimulator("p1", rate=1.0)(batch)
    assert torch.equal(full["text_dropped"], interior)


def test_p1_seeds_batching_and_nesting():
    batch = feature_batch(n=64, steps=20, min_len=1)
    a = MissingModalitySimulator("p1", rate=0.4)(batch)
    b = MissingModalitySimulator("p1", rate=0.4)(batch)
    c = MissingModalitySimulator("p1", rate=0.4, seed=(1, 2, 3))(batch)
    for m in ("text", "audio", "vision"):
        assert torch.equal(a[f"{m}_dropped"], b[f"{m}_dropped"])
        assert not torch.equal(a[f"{m}_dropped"], c[f"{m}_dropped"])
    # per-modality seeds differ: text and audio masks of the same rows are not identical
    assert not torch.equal(a["text_dropped"], a["audio_dropped"])
    # independent of batch size and order: rows 40..63 reversed, on their own
    idx = torch.arange(63, 39, -1)
    part = MissingModalitySimulator("p1", rate=0.4)(subset(batch, idx))
    assert torch.equal(part["audio_dropped"], a["audio_dropped"][idx])
    # the same uniforms for every rate: the r = 0.2 drop set is inside the r = 0.4 one
    low = MissingModalitySimulator("p1", rate=0.2)(batch)
    assert not (low["vision_dropped"] & ~a["vision_dropped"]).any()
    assert low["vision_dropped"].sum() < a["vision_dropped"].sum()


def test_simulator_never_mutates_its_input():
    batch = feature_batch(n=32)
    before = {k: v.clone() for k, v in batch.items()}
    MissingModalitySimulator("p5", training=True)(batch)
    MissingModalitySimulator("p1", rate=0.7)(batch)
    for k in before:
        assert torch.equal(batch[k], before[k]), k


def test_eval_needs_row_keys_and_model_inputs_drops_extras():
    batch = feature_batch(n=4)
    del batch["row_key"]
    with pytest.raises(ValueError, match="return_row_keys=True"):
        MissingModalitySimulator("p1", rate=0.3)(batch)
    out = MissingModalitySimulator("p2", training=True)(batch)
    out["row_key"] = torch.zeros(4, dtype=torch.long)
    # the dropped flags reach the model (it puts dropped feature steps at the training mean); row_key does not
    assert "audio_dropped" in model_inputs(out) and "row_key" not in model_inputs(out)
    assert set(model_inputs(out)) == set(batch) | {f"{m}_dropped" for m in ("text", "audio", "vision")}


# ---- P2 ------------------------------------------------------------------------------------------------------
def test_p2_training_half_complete_and_redrawn_every_call():
    batch = feature_batch(n=2000, steps=50)
    sim = MissingModalitySimulator("p2", training=True, seed=1111)
    first, second = sim(batch), sim(batch)
    for m in ("text", "audio", "vision"):
        none_dropped = (~first[f"{m}_dropped"].any(1)).float().mean().item()
        # 50% reset to rate 0 per modality (LNLN), plus U(0,1) rates that drop nothing of 50 steps: 1/51
        assert abs(none_dropped - (0.5 + 0.5 / 51)) < 0.04, (m, none_dropped)
        rates = first[f"{m}_dropped"].float().mean(1)
        # E[r | not reset] = 0.5, so the mean realised rate is 0.25
        assert abs(rates.mean().item() - 0.25) < 0.02
        assert not torch.equal(first[f"{m}_dropped"], second[f"{m}_dropped"])  # new draw each epoch
    # LNLN resets each modality independently: complete in all three is ~(0.51)^3
    all_complete = (~first["text_dropped"].any(1) & ~first["audio_dropped"].any(1)
                    & ~first["vision_dropped"].any(1)).float().mean().item()
    assert abs(all_complete - 0.51 ** 3) < 0.04
    # a run is reproducible from its seed
    again = MissingModalitySimulator("p2", training=True, seed=1111)(batch)
    assert torch.equal(again["audio_dropped"], first["audio_dropped"])


def test_p2_training_with_listed_rates_gives_each_row_one_of_them_for_every_modality():
    batch = feature_batch(n=2000, steps=200)
    out = MissingModalitySimulator("p2", training=True, seed=1111, train_rates=(0.0, 0.9))(batch)
    realised = torch.stack([out[f"{m}_dropped"].float().mean(1) for m in ("text", "audio", "vision")], 1)  # (B, 3)
    high = realised[:, 0] > 0.45
    # every modality of a row drops at the row's one rate: 0 exactly, or 0.9 up to binomial noise (sd 0.021)
    assert torch.equal(realised[~high], torch.zeros_like(realised[~high]))
    assert (realised[high] - 0.9).abs().max().item() < 0.1
    assert abs(high.float().mean().item() - 0.5) < 0.04  # the two rates drawn uniformly
    assert abs(realised.mean().item() - 0.45) < 0.02  # the mean of the listed rates (LNLN's draw: 0.25)
    for kwargs in (dict(training=False, rate=0.5), dict(training=True, protocol="p1", rate=0.5)):
        protocol = kwargs.pop("protocol", "p2")
        with pytest.raises(ValueError, match="train_rates is P2's training draw"):
            MissingModalitySimulator(protocol, train_rates=(0.5,), **kwargs)
    with pytest.raises(ValueError, match=r"train_rates must be a non-empty list of rates in \[0, 1\], got \[1.5\]"):
        MissingModalitySimulator("p2", training=True, train_rates=(1.5,))


def test_p2_evaluation_is_fixed_rate_and_deterministic():
    batch = feature_batch(n=300, steps=30)
    valid = MissingModalitySimulator("p2")  # LNLN validates at r = 0.5
    assert valid.rate == 0.5
    out = MissingModalitySimulator("p2", rate=0.3, seed=1112)(batch)
    again = MissingModalitySimulator("p2", rate=0.3, seed=1112)(batch)
    assert torch.equal(out["text_dropped"], again["text_dropped"])
    assert abs(out["text_dropped"].float().mean().item() - 0.3) < 0.02
    assert torch.equal(out["modality_mask"], batch["modality_mask"])


# ---- P3 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("availability", ["l", "a", "v", "la", "lv", "av"])
def test_p3_availability_sets_are_exact(availability):
    batch = feature_batch(n=50, steps=10, min_len=1)
    out = MissingModalitySimulator("p3", availability=availability)(batch)
    expected = torch.tensor([c in availability for c in "lav"])
    assert torch.equal(out["modality_mask"], expected.expand(50, 3))
    for i, m in enumerate(("text", "audio", "vision")):
        if expected[i]:
            assert torch.equal(out[f"{m}_features"], batch[f"{m}_features"])
            assert not out[f"{m}_dropped"].any()
        else:
            assert torch.all(out[f"{m}_features"] == 0) and torch.all(out[f"{m}_lengths"] == 0)
            valid = torch.arange(10)[None, :] < batch[f"{m}_lengths"][:, None]
            assert torch.equal(out[f"{m}_dropped"], valid)  # every original step is marked dropped


def test_p3_frame_drop_with_a_set_and_errors():
    batch = feature_batch(n=300, steps=40)
    out = MissingModalitySimulator("p3", availability={"text", "vision"}, rate=0.3)(batch)
    assert abs(out["vision_dropped"].float().mean().item() - 0.3) < 0.02
    assert out["modality_mask"][:, 1].sum() == 0
    no_vision = feature_batch(n=8, vision=False)
    with pytest.raises(ValueError, match="leaves row"):
        MissingModalitySimulator("p3", availability="v")(no_vision)
    with pytest.raises(ValueError, match="availability"):
        MissingModalitySimulator("p3", availability="x")


def test_p3_training_draws_all_seven_patterns():
    batch = feature_batch(n=1400, steps=5)
    out = MissingModalitySimulator("p3", training=True, rate=0.0)(batch)
    counts = {p: 0 for p in PATTERNS}
    for row in out["modality_mask"].int().tolist():
        counts[tuple(row)] += 1
    assert all(abs(c / 1400 - 1 / 7) < 0.04 for c in counts.values()), counts


# ---- P4 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mr", sorted(P4_SHARES))
def test_p4_missing_share_matches_mr(mr):
    batch = feature_batch(n=3000, steps=2)
    out = MissingModalitySimulator("p4", rate=mr, training=True)(batch)
    kept = out["modality_mask"].sum(1)
    two, one = P4_SHARES[mr]
    assert abs((kept == 1).float().mean().item() - two) < 0.03
    assert abs((kept == 2).float().mean().item() - one) < 0.03
    missing_fraction = 1 - out["modality_mask"].float().mean().item()
    assert abs(missing_fraction - min(mr, 2 / 3)) < 0.02  # MR 0.7 is capped at 2/3 by the share table
    assert kept.min() >= 1


def test_p4_rejects_rates_outside_the_table():
    with pytest.raises(ValueError, match="p4 needs rate"):
        MissingModalitySimulator("p4", rate=0.35)


# ---- P5 ------------------------------------------------------------------------------------------------------
def test_p5_pattern_frequencies_match_weights():
    n = 7000
    batch = feature_batch(n=n, steps=2)
    out = MissingModalitySimulator("p5", training=True, seed=3)(batch)
    rows = [tuple(r) for r in out["modality_mask"].int().tolist()]
    for pattern, w in zip(PATTERNS, P5_WEIGHTS):
        freq = rows.count(pattern) / n
        sd = math.sqrt(w / 14 * (1 - w / 14) / n)
        assert abs(freq - w / 14) < 4 * sd, (pattern, freq, w / 14)
    # missing modalities are zeroed, present ones untouched
    gone = ~out["modality_mask"][:, 1]
    assert torch.all(out["audio_features"][gone] == 0)
    assert torch.equal(out["audio_features"][~gone], batch["audio_features"][~gone])


def test_p5_never_empties_a_row_and_conditions_on_available_modalities():
    batch = feature_batch(n=4000, steps=2, vision=False)  # like MOSI here: no vision anywhere
    out = MissingModalitySimulator("p5", training=True)(batch)
    mask = out["modality_mask"]
    assert mask.any(1).all() and not mask[:, 2].any()
    # usable patterns {l},{a},{l,a},{l,v},{a,v},{l,a,v} -> kept {l}: 2+1=3, {a}: 3+3=6, {l,a}: 1+1=2 (of 11)
    kept = [tuple(r) for r in mask.int().tolist()]
    for pattern, expected in (((1, 0, 0), 3 / 11), ((0, 1, 0), 6 / 11), ((1, 1, 0), 2 / 11)):
        assert abs(kept.count(pattern) / 4000 - expected) < 0.03


def test_p5_evaluation_uses_a_fixed_pattern():
    with pytest.raises(ValueError, match="fixed availability"):
        MissingModalitySimulator("p5")
    out = MissingModalitySimulator("p5", availability="la")(feature_batch(n=10))
    assert torch.equal(out["modality_mask"], torch.tensor([[True, True, False]] * 10))


# ---- raw waveforms, frames, whole-modality drops on tokens ----------------------------------------------------
def test_waveform_chunks_frames_and_token_whole_drop():
    g = torch.Generator().manual_seed(0)
    n, samples, frames = 6, 3200 + 100, 5
    batch = {
        "input_ids": torch.tensor([[CLS, 7, 8, 9, SEP]] * n),
        "attention_mask": torch.ones(n, 5, dtype=torch.long),
        "input_values": torch.randn(n, samples, generator=g) + 3.0,
        "audio_attention_mask": torch.ones(n, samples, dtype=torch.long),
        "pixel_values": torch.randn(n, frames, 3, 4, 4, generator=g) + 3.0,
        "frame_mask": torch.ones(n, frames, dtype=torch.bool),
        "modality_mask": torch.ones(n, 3, dtype=torch.bool),
        "row_key": torch.arange(n),
    }
    batch["audio_attention_mask"][0, 1000:] = 0
    out = MissingModalitySimulator("p1", rate=0.5)(batch)
    chunks = math.ceil(samples / WAVEFORM_CHUNK)
    assert out["audio_dropped"].shape == (n, chunks)
    assert not out["audio_dropped"][0, math.ceil(1000 / WAVEFORM_CHUNK):].any()
    flags = out["audio_dropped"].repeat_interleave(WAVEFORM_CHUNK, 1)[:, :samples]
    assert torch.all(out["input_values"][flags] == 0) and torch.all(out["input_values"][~flags] != 0)
    assert out["vision_dropped"].shape == (n, frames)
    assert torch.all(out["pixel_values"][out["vision_dropped"]] == 0)
    # whole-modality drop of tokens: pad ids, attention 0, every original token marked dropped
    whole = MissingModalitySimulator("p5", availability="av")(batch)
    assert torch.all(whole["input_ids"] == 0) and torch.all(whole["attention_mask"] == 0)
    assert whole["text_dropped"].all() and not whole["modality_mask"][:, 0].any()


def test_protocol_argument_errors():
    with pytest.raises(ValueError, match="unknown protocol"):
        MissingModalitySimulator("p9")
    with pytest.raises(ValueError, match="p1 needs a rate"):
        MissingModalitySimulator("p1")
    with pytest.raises(ValueError, match="rate must lie"):
        MissingModalitySimulator("p2", rate=1.5)
    none = MissingModalitySimulator("none")(feature_batch(n=3))
    assert not none["text_dropped"].any()
    np.testing.assert_array_equal(none["modality_mask"].numpy(), np.ones((3, 3), bool))


def test_modalities_sharing_one_seed_drop_independent_steps():
    """With one integer seed, text and audio must not drop the same step positions (independent streams)."""
    batch = {
        "text_features": torch.ones(64, 40, 3), "text_lengths": torch.full((64,), 40),
        "audio_features": torch.ones(64, 40, 2), "audio_lengths": torch.full((64,), 40),
        "modality_mask": torch.tensor([[True, True, False]] * 64),
        "row_key": torch.arange(64),
    }
    out = MissingModalitySimulator("p1", 0.5, seed=1111)(batch)
    agree = (out["text_dropped"] == out["audio_dropped"]).float().mean().item()
    assert 0.4 < agree < 0.6  # independent Bernoulli(0.5) masks agree about half the time


def test_kept_fraction_by_hand():
    """Row 0 keeps 3 of its 4 valid audio steps; row 1 loses audio entirely; text is untouched; vision absent."""
    from hf_mmkd.data.missing import kept_fraction

    complete = {
        "text_features": torch.zeros(2, 4, 3), "text_lengths": torch.tensor([4, 2]),
        "audio_features": torch.zeros(2, 4, 3), "audio_lengths": torch.tensor([4, 2]),
        "modality_mask": torch.tensor([[True, True, False], [True, True, False]]),
    }
    view = dict(complete)
    view["audio_dropped"] = torch.tensor([[True, False, False, False], [True, True, False, False]])
    view["modality_mask"] = torch.tensor([[True, True, False], [True, False, False]])
    kept = kept_fraction(complete, view)
    assert torch.allclose(kept, torch.tensor([[1.0, 0.75, 0.0], [1.0, 0.0, 0.0]]))
