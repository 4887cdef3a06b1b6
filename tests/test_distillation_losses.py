"""Distillation losses (hf_mmkd.distillation): hand-computed values on tiny tensors, gradient flow, factory."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hf_mmkd.distillation import (
    DISTILLATION_LOSSES,
    CorrKDLoss,
    CrossModalKDLoss,
    LogitKD,
    MITRLoss,
    MVSCLoss,
    build_distillation_loss,
    canonical_method,
)
from hf_mmkd.distillation.base import StatisticsNetwork
from hf_mmkd.distillation.corrkd import cpd_loss, scd_loss
from hf_mmkd.distillation.functional import (
    class_centres,
    class_targets,
    decouple_response,
    grad_reverse,
    info_nce,
    jsd_mutual_information,
    regression_class_logits,
    supcon_loss,
)
from hf_mmkd.distillation.mitr import masked_smooth_l1

B, D, FUSION, L = 6, 8, 8, 5
FEATURE_DIMS = {"text": 7, "audio": 5, "vision": 6}


def make_config(task="regression", num_labels=1, fusion_dim=FUSION, **overrides):
    fields = dict(hidden_size=D, fusion_dim=fusion_dim, task=task, num_labels=num_labels,
                  **{f"{m}_feature_dim": d for m, d in FEATURE_DIMS.items()})
    fields.update(overrides)
    return SimpleNamespace(**fields)


def make_output(task="regression", num_labels=1, fusion_dim=FUSION, requires_grad=True, seed=0):
    """A model output following the interface contract (leaf tensors, so gradients can be inspected)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    out = SimpleNamespace(logits=t(B, 1 if task == "regression" else num_labels), fused=t(B, fusion_dim),
                          modality_mask=torch.ones(B, 3, dtype=torch.bool))
    for m in FEATURE_DIMS:
        setattr(out, f"{m}_pooled", t(B, D))
        setattr(out, f"{m}_sequence", t(B, L, D))
        setattr(out, f"{m}_step_mask", torch.ones(B, L, dtype=torch.bool))
    return out


def regression_labels():
    return torch.tensor([-2.6, -1.2, -0.3, 0.4, 1.4, 2.8])


def grads_of(*tensors):
    return [t.grad is not None and t.grad.abs().sum() > 0 for t in tensors]


# ----------------------------------------------------------------------------- shared helpers


def naive_supcon(z, sample_ids, class_ids, tau):
    n, total, anchors = z.shape[0], 0.0, 0
    for a in range(n):
        positives = [p for p in range(n) if p != a and (sample_ids[p] == sample_ids[a]
                     or (class_ids is not None and class_ids[p] == class_ids[a]))]
        if not positives:
            continue
        denom = sum(math.exp(float(z[a] @ z[b]) / tau) for b in range(n) if b != a)
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / tau) / denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("with_classes", [True, False])
def test_supcon_matches_naive_loop(with_classes):
    z = F.normalize(torch.randn(9, 4, dtype=torch.float64), dim=-1)
    sample_ids = torch.arange(3).repeat(3)
    class_ids = torch.tensor([0, 1, 0]).repeat(3) if with_classes else None
    got = supcon_loss(z, sample_ids, class_ids, temperature=0.5)
    assert got.item() == pytest.approx(naive_supcon(z, sample_ids, class_ids, 0.5), rel=1e-9)


def test_supcon_skips_anchors_without_positives():
    z = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 0, 1])  # anchor 2 has no positive
    got = supcon_loss(z, ids, None, temperature=0.1)
    assert got.item() == pytest.approx(naive_supcon(z, ids, None, 0.1), rel=1e-9)
    assert supcon_loss(z, torch.arange(3), None).item() == 0.0


def test_info_nce_matches_hand_computation():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    tau, expected = 0.2, 0.0
    for i in range(4):
        sims = [F.cosine_similarity(x[i], y[j], dim=0).item() / tau for j in range(4)]
        expected -= sims[i] - math.log(sum(math.exp(s) for s in sims))
    assert info_nce(x, y, tau).item() == pytest.approx(expected / 4, rel=1e-9)


def test_class_targets_bins():
    y = torch.tensor([-3.4, -0.6, -0.2, 0.0, 0.5, 2.6])
    assert class_targets(y, "regression", "sign").tolist() == [0, 0, 0, 1, 1, 1]
    assert class_targets(y, "regression", "7class").tolist() == [0, 2, 3, 3, 3, 6]  # round half to even
    assert class_targets(torch.tensor([2, 0]), "classification").tolist() == [2, 0]
    with pytest.raises(ValueError):
        class_targets(y, "regression", "5class")


def test_class_targets_label_shift_hand_bins():
    # ICT-MMMO ratings with shift -3: y = [-2, -0.5, 1, 2] -> round (-0.5 -> -0, half to even) -> [-2, 0, 1, 2] + 3
    ratings = torch.tensor([1.0, 2.5, 4.0, 5.0])
    assert class_targets(ratings, "regression", "7class", label_shift=-3).tolist() == [1, 3, 4, 5]
    assert class_targets(ratings, "regression", "sign", label_shift=-3).tolist() == [0, 0, 1, 1]
    # without the shift the raw ratings clip to [1, 2.5, 3, 3] -> [1, 2, 3, 3] + 3: 3 of 7 bins, and one sign class
    assert class_targets(ratings, "regression", "7class").tolist() == [4, 5, 6, 6]
    assert class_targets(ratings, "regression", "sign").tolist() == [1, 1, 1, 1]
    # rating 3.5 -> 0.5 -> 0 (half to even), rating 0.2 -> -2.8 -> -3 -> bin 0
    assert class_targets(torch.tensor([3.5, 0.2]), "regression", "7class", label_shift=-3).tolist() == [3, 0]
    with pytest.raises(ValueError, match="only applies to regression"):
        class_targets(torch.tensor([1, 0]), "classification", label_shift=-3)


def test_regression_class_logits_label_shift_moves_the_prediction():
    centres = class_centres("7class")
    shifted = regression_class_logits(torch.tensor([[4.0], [1.0]]), centres, sigma=0.5, label_shift=-3)
    plain = regression_class_logits(torch.tensor([[1.0], [-2.0]]), centres, sigma=0.5)
    assert torch.equal(shifted, plain)
    assert shifted.argmax(-1).tolist() == [4, 1]  # rating 4 -> centre 1 (bin 4), rating 1 -> centre -2 (bin 1)


def test_decouple_response_hand_values():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    binary, non_target = decouple_response(logits, torch.tensor([0]))
    assert torch.allclose(binary, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(non_target, torch.tensor([[0.6, 0.4]]))
    assert decouple_response(logits[:, :2], torch.tensor([1]))[1] is None


def test_regression_class_logits_are_gaussian_soft_classes_with_gradients():
    pred = torch.tensor([[0.0], [1.0]], requires_grad=True)
    p = regression_class_logits(pred, torch.tensor([-1.0, 0.0, 1.0]), sigma=1.0).softmax(-1)
    w = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    assert torch.allclose(p[0], w / w.sum())
    p[:, 2].sum().backward()
    assert pred.grad.abs().sum() > 0


def test_grad_reverse_flips_gradient_sign():
    x = torch.randn(5, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.5 * torch.arange(5.0))
    assert torch.equal(grad_reverse(x), x)


def test_jsd_mi_higher_for_dependent_than_independent_pairs():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    pairs = {"dependent": x + 0.1 * torch.randn(256, 2), "independent": torch.randn(256, 2)}
    estimate = {}
    for name, y in pairs.items():
        net = StatisticsNetwork(2, 2, hidden_dim=32)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            (-jsd_mutual_information(net, x, y)).backward()
            opt.step()
        with torch.no_grad():
            estimate[name] = jsd_mutual_information(net, x, y).item()
    # This estimator is 2 (JSD(P_xy || P_x P_y) - log 2) at the optimum: -2 log 2 for independent pairs.
    assert estimate["independent"] < -1.0
    assert estimate["dependent"] > estimate["independent"] + 0.5, estimate


# ----------------------------------------------------------------------------- MM-CKD


def test_mvsc_equals_supcon_on_projected_views_and_reaches_every_view():
    config = make_config()
    module = MVSCLoss(config, temperature=0.1)
    teacher, students = make_output(seed=0), [make_output(seed=1), make_output(seed=2)]
    labels = regression_labels()
    terms = module(teacher, students, labels)
    assert set(terms) == {"loss_mvsc"}

    z = torch.cat([module.project(o.fused, v) for v, o in enumerate([teacher, *students])]).detach()
    ids, classes = torch.arange(B).repeat(3), class_targets(labels, "regression", "7class").repeat(3)
    assert terms["loss_mvsc"].item() == pytest.approx(naive_supcon(z.double(), ids, classes, 0.1), rel=1e-5)

    terms["loss_mvsc"].backward()
    assert all(grads_of(teacher.fused, *(s.fused for s in students)))  # online: the teacher is not detached
    assert all(p.grad is not None for p in module.parameters())


def test_mvsc_per_view_heads_and_no_label_positives():
    module = MVSCLoss(make_config(), shared_head=False, num_students=2, use_label_positives=False)
    assert len(module.heads) == 3
    teacher, students = make_output(seed=0), [make_output(seed=1), make_output(seed=2)]
    module(teacher, students, regression_labels())["loss_mvsc"].backward()
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError):
        module(teacher, students[:1], regression_labels())
    with pytest.raises(ValueError):
        MVSCLoss(make_config(), shared_head=False)


def shifted(out, shift):
    """`out` with its regression prediction moved by `shift` (every other field shared)."""
    return SimpleNamespace(**{**vars(out), "logits": out.logits + shift})


@pytest.mark.parametrize("label_bins", ["7class", "sign"])
def test_mvsc_label_shift_bins_shifted_labels_like_mosi_labels(label_bins):
    teacher, students = make_output(seed=0), [make_output(seed=1)]
    labels = regression_labels()  # MOSI scale
    torch.manual_seed(0)
    mosi = MVSCLoss(make_config(), label_bins=label_bins)
    torch.manual_seed(0)
    mmmo = MVSCLoss(make_config(), label_bins=label_bins, label_shift=-3)
    unshifted = MVSCLoss(make_config(), label_bins=label_bins)
    unshifted.load_state_dict(mosi.state_dict())
    expected = mosi(teacher, students, labels)["loss_mvsc"].item()
    assert mmmo(teacher, students, labels + 3)["loss_mvsc"].item() == pytest.approx(expected, rel=1e-6)
    assert unshifted(teacher, students, labels + 3)["loss_mvsc"].item() != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="only applies to regression"):
        MVSCLoss(make_config(task="classification", num_labels=3), label_shift=-3)


# ----------------------------------------------------------------------------- CorrKD


def test_scd_zero_for_identical_well_separated_embeddings():
    h = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    assert scd_loss(h, h.clone(), margin=1.0).item() == 0.0


def test_scd_hand_computed():
    h_s = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    h_t = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    # (0,0): 0; (1,1): 0.5^2; (0,1): d = 0.5 -> (1 - 0.5)^2; (1,0): d = 1 -> 0.  Mean over 4 pairs.
    assert scd_loss(h_s, h_t, margin=1.0).item() == pytest.approx((0.25 + 0.25) / 4)


def test_scd_gradient_is_finite_when_embeddings_coincide():
    h_s = torch.zeros(3, 2, requires_grad=True)
    scd_loss(h_s, torch.zeros(3, 2), margin=1.0).backward()
    assert torch.isfinite(h_s.grad).all()


def naive_cpd(h_t, h_s, classes):
    present = sorted(set(classes.tolist()))
    total = 0.0
    for k in present:
        members = [i for i, c in enumerate(classes.tolist()) if c == k]
        c_t, c_s = h_t[members].mean(0), h_s[members].mean(0)
        for i in range(h_t.shape[0]):
            total += (F.cosine_similarity(h_t[i], c_t, dim=0) - F.cosine_similarity(h_s[i], c_s, dim=0)).item() ** 2
    return total / (h_t.shape[0] * len(present))


def test_cpd_zero_for_equal_embeddings_and_hand_value_with_absent_class():
    h_t, h_s = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    classes = torch.tensor([0, 0, 4, 4, 4])  # classes 1-3 absent: no prototype
    assert cpd_loss(h_t, h_t.clone(), classes).item() == pytest.approx(0.0, abs=1e-12)
    assert cpd_loss(h_t, h_s, classes).item() == pytest.approx(naive_cpd(h_t, h_s, classes), rel=1e-9)


@pytest.mark.parametrize("task,num_labels,label_bins", [("regression", 1, "7class"), ("regression", 1, "sign"),
                                                         ("classification", 4, "7class")])
def test_corrkd_terms_and_gradients(task, num_labels, label_bins):
    config = make_config(task=task, num_labels=num_labels)
    module = CorrKDLoss(config, label_bins=label_bins)
    assert (module.non_target_mi is None) == (task == "regression" and label_bins == "sign")
    teacher, student = make_output(task, num_labels, seed=0), make_output(task, num_labels, seed=1)
    labels = regression_labels() if task == "regression" else torch.tensor([0, 1, 2, 3, 0, 1])
    terms = module(teacher, [student], labels)
    assert set(terms) == {"loss_scd", "loss_cpd", "loss_rcd"}
    sum(terms.values()).backward()
    assert all(grads_of(student.fused, student.logits))  # the student's response gets RCD gradients
    assert all(p.grad is not None for p in module.target_mi.parameters())


@pytest.mark.parametrize("label_bins", ["7class", "sign"])
def test_corrkd_label_shift_matches_the_mosi_scale(label_bins):
    # Labels and predictions on the 1..5 scale with label_shift=-3 give exactly the terms of the same batch on the
    # MOSI scale: same classes (CPD prototypes, RCD targets) and same soft class responses.
    teacher, student = make_output(seed=0), make_output(seed=1)
    labels = regression_labels()
    torch.manual_seed(0)
    mosi = CorrKDLoss(make_config(), label_bins=label_bins)
    torch.manual_seed(0)
    mmmo = CorrKDLoss(make_config(), label_bins=label_bins, label_shift=-3)
    assert mmmo.label_shift == -3.0
    random.seed(0)
    expected = mosi(teacher, [student], labels)
    random.seed(0)
    got = mmmo(shifted(teacher, 3.0), [shifted(student, 3.0)], labels + 3)
    for name in ("loss_scd", "loss_cpd", "loss_rcd"):
        assert got[name].item() == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-7), name
    classes = class_targets(labels + 3, "regression", label_bins, label_shift=-3)
    assert torch.equal(classes, class_targets(labels, "regression", label_bins))
    with pytest.raises(ValueError, match="only applies to regression"):
        CorrKDLoss(make_config(task="classification", num_labels=4), label_shift=-3)
    with pytest.raises(ValueError, match="must be a number"):
        CorrKDLoss(make_config(), label_shift="minus three")


def test_label_shift_reaches_the_losses_through_method_kwargs():
    for method in ("corrkd", "mmckd"):
        assert build_distillation_loss(method, make_config(), label_shift=-3).label_shift == -3.0


def test_corrkd_averages_terms_over_students():
    module = CorrKDLoss(make_config(), rcd_weight=0.0)
    teacher, s1, s2 = make_output(seed=0), make_output(seed=1), make_output(seed=2)
    labels = regression_labels()
    both = module(teacher, [s1, s2], labels)
    one, two = module(teacher, s1, labels), module(teacher, [s2], labels)
    for name in ("loss_scd", "loss_cpd"):
        assert both[name].item() == pytest.approx((one[name].item() + two[name].item()) / 2, rel=1e-6)


# ----------------------------------------------------------------------------- MITR-DNet


def feature_batches(drop_fraction=0.4):
    g = torch.Generator().manual_seed(3)
    teacher_batch = {f"{m}_features": torch.randn(B, L, d, generator=g) for m, d in FEATURE_DIMS.items()}
    student_batch = {f"{m}_dropped": torch.rand(B, L, generator=g) < drop_fraction for m in FEATURE_DIMS}
    return teacher_batch, student_batch


def test_masked_smooth_l1_only_counts_dropped_steps():
    pred, target = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    target[0, 0] = 5.0  # a kept step: ignored
    target[0, 1] = torch.tensor([0.5, 3.0])  # a dropped step: SmoothL1 = 0.5*0.5^2 + (3 - 0.5)
    mask = torch.tensor([[False, True, True]])
    expected = (0.125 + 2.5) / (4 + 1e-6)  # normalised by the number of masked elements (2 steps x 2 dims)
    assert masked_smooth_l1(pred, target, mask).item() == pytest.approx(expected)
    assert masked_smooth_l1(pred, target, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_mitr_kd_terms_hand_computed_and_gradients():
    module = MITRLoss(make_config())
    teacher, student = make_output(seed=0), make_output(seed=1)
    teacher_batch, student_batch = feature_batches()
    terms = module(teacher, [student], None, teacher_batch=teacher_batch, student_batches=[student_batch])
    assert set(terms) == {"loss_attra", "loss_recon", "loss_kd_tf", "loss_kd_mib", "loss_kd_ss"}

    z = {m: (getattr(teacher, f"{m}_pooled"), getattr(student, f"{m}_pooled")) for m in FEATURE_DIMS}
    tf = sum((zs - teacher.fused).abs().mean() for _, zs in z.values())
    mib = sum(((zs - zt) ** 2).mean() for zt, zs in z.values())
    ss = sum(((zs - student.fused) ** 2).mean() for _, zs in z.values())
    assert terms["loss_kd_tf"].item() == pytest.approx(0.3 * tf.item(), rel=1e-5)
    assert terms["loss_kd_mib"].item() == pytest.approx(0.3 * mib.item(), rel=1e-5)
    assert terms["loss_kd_ss"].item() == pytest.approx(0.3 * ss.item(), rel=1e-5)

    sum(terms.values()).backward()
    assert all(grads_of(teacher.fused, teacher.text_pooled))  # teacher features are NOT detached
    assert all(grads_of(student.audio_pooled, student.vision_sequence))
    assert all(p.grad is not None for p in module.parameters())


def test_mitr_reconstruction_targets_features_at_dropped_steps_only():
    module = MITRLoss(make_config(), modalities=["text"])
    teacher, student = make_output(seed=0), make_output(seed=1)
    teacher_batch, student_batch = feature_batches()
    recon = module.recon["text"](student.text_sequence)  # (B, L, 7)
    target = teacher_batch["text_features"].clone()
    mask = student_batch["text_dropped"]
    teacher_batch["text_features"] = torch.where(mask[..., None], target, recon.detach() + 100.0)  # kept steps: junk
    terms = module(teacher, student, None, teacher_batch=teacher_batch, student_batches=student_batch)
    expected = masked_smooth_l1(recon, target, mask)
    assert terms["loss_recon"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_mitr_backbone_inputs_reconstruct_teacher_sequence_and_skip_waveform_audio():
    config = make_config(text_feature_dim=None, audio_feature_dim=None, vision_feature_dim=None,
                         modalities=["text", "audio", "vision"])
    module = MITRLoss(config)
    assert set(module.recon) == {"text", "vision"}  # no step alignment for 16 kHz waveforms
    teacher, student = make_output(seed=0), make_output(seed=1)
    _, student_batch = feature_batches()
    terms = module(teacher, [student], None, teacher_batch={}, student_batches=[student_batch])
    terms["loss_recon"].backward()
    assert teacher.text_sequence.grad is None  # the teacher's per-step target is detached
    assert student.text_sequence.grad is not None and student.audio_sequence.grad is None


def test_mitr_projects_fused_when_widths_differ_and_requires_batches():
    module = MITRLoss(make_config(fusion_dim=12))
    teacher, student = make_output(fusion_dim=12, seed=0), make_output(fusion_dim=12, seed=1)
    teacher_batch, student_batch = feature_batches()
    terms = module(teacher, [student], None, teacher_batch=teacher_batch, student_batches=[student_batch])
    assert torch.isfinite(torch.stack(list(terms.values()))).all()
    with pytest.raises(ValueError):
        module(teacher, [student], None)


# ----------------------------------------------------------------------------- cross-modal KD


def test_crossmodal_terms_and_nce_values():
    module = CrossModalKDLoss(make_config(), temperature=0.2, alpha=0.5, l2_weight=1.0)
    teacher, student = make_output(seed=0), make_output(seed=1)
    aux = torch.randn(B, D, requires_grad=True)
    terms = module(teacher, [student], None, aux_features=aux)
    assert set(terms) == {"loss_nce_ts", "loss_nce_ta", "loss_adv", "loss_l2"}
    z_t = module.proj["teacher"](teacher.fused)
    expected_ta = 0.5 * info_nce(z_t, module.proj["aux"](aux), 0.2)
    assert terms["loss_nce_ta"].item() == pytest.approx(expected_ta.item(), rel=1e-6)
    sum(terms.values()).backward()
    assert all(grads_of(teacher.fused, student.fused, aux))  # online teacher, student and A all learn
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError):
        module(teacher, [student], None)  # aux_features are required


def test_crossmodal_adversarial_update_rule():
    """One optimiser: D descends its BCE; G and the student receive the reversed (ascending) gradient."""
    module = CrossModalKDLoss(make_config(), ts_weight=0.0, alpha=0.0)
    teacher, student = make_output(seed=0), make_output(seed=1)
    module(teacher, [student], None, aux_features=torch.randn(B, D))["loss_adv"].backward()
    grl = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    student_grad = student.fused.grad.clone()
    assert teacher.fused.grad is None  # f_T enters the adversarial term detached

    module.zero_grad()
    f_s = student.fused.detach().requires_grad_()
    fake = module.generator(f_s)
    d_real, d_fake = module.discriminator(teacher.fused.detach()), module.discriminator(fake)
    plain = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
             + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    plain.backward()
    for n, p in module.named_parameters():
        if n.startswith("discriminator"):
            assert torch.allclose(grl[n], p.grad, atol=1e-6)
        elif n.startswith("generator"):
            assert torch.allclose(grl[n], -p.grad, atol=1e-6)
    assert torch.allclose(student_grad, -f_s.grad, atol=1e-6)


# ----------------------------------------------------------------------------- baselines and factory


def test_logit_kd_classification_and_regression():
    config = make_config(task="classification", num_labels=3)
    teacher, student = make_output("classification", 3, seed=0), make_output("classification", 3, seed=1)
    t = 2.0
    loss = LogitKD(config, temperature=t)(teacher, [student], None)["loss_logit"]
    p_t = (teacher.logits / t).softmax(-1)
    kl = (p_t * (p_t.log() - (student.logits / t).log_softmax(-1))).sum(-1).mean()
    assert loss.item() == pytest.approx(t * t * kl.item(), rel=1e-5)
    loss.backward()
    assert teacher.logits.grad is None and student.logits.grad is not None  # fixed teacher

    teacher, student = make_output(seed=0), make_output(seed=1)
    loss = LogitKD(make_config())(teacher, student, None)["loss_logit"]
    assert loss.item() == pytest.approx(((student.logits - teacher.logits) ** 2).mean().item(), rel=1e-6)


def test_factory_builds_every_method_with_one_call_signature():
    config = make_config()
    teacher, student = make_output(seed=0), make_output(seed=1)
    teacher_batch, student_batch = feature_batches()
    for method in DISTILLATION_LOSSES:
        module = build_distillation_loss(method, config)
        assert module.method == method and module.teacher_mode in ("none", "frozen", "online", "shared")
        terms = module(teacher, [student], regression_labels(), teacher_batch=teacher_batch,
                       student_batches=[student_batch], aux_features=torch.randn(B, D))
        assert all(name.startswith("loss_") and t.ndim == 0 and torch.isfinite(t) for name, t in terms.items())
        assert (terms == {}) == (method == "none")
    assert canonical_method("MITR_DNet") == "mitr" and canonical_method("MM-CKD") == "mmckd"
    assert canonical_method(None) == "none"
    assert build_distillation_loss("corrkd", config, margin=2.5).margin == 2.5
    with pytest.raises(ValueError):
        build_distillation_loss("fitnets", config)
    with pytest.raises(ValueError):
        build_distillation_loss("corrkd")


def test_losses_run_on_the_real_model_outputs():
    """The interface contract against MMKDForSentiment (tiny feature model; teacher complete, student masked)."""
    from hf_mmkd import MMKDConfig, MMKDForSentiment
    from tiny import feature_batch, feature_config_kwargs

    config = MMKDConfig(**feature_config_kwargs())
    model = MMKDForSentiment(config)
    teacher_batch = feature_batch(batch_size=4)
    student_batch = dict(teacher_batch, modality_mask=torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]]))
    for m in FEATURE_DIMS:
        student_batch[f"{m}_dropped"] = torch.zeros_like(teacher_batch[f"{m}_features"][..., 0], dtype=torch.bool)
    student_batch["text_dropped"][:, 0] = True
    model_keys = [k for k in student_batch if not k.endswith("_dropped")]
    teacher_out = model(**teacher_batch)
    student_out = model(**{k: student_batch[k] for k in model_keys})
    for method in DISTILLATION_LOSSES:
        module = build_distillation_loss(method, config)
        aux = teacher_out.vision_pooled
        terms = module(teacher_out, [student_out], teacher_batch["labels"], teacher_batch=teacher_batch,
                       student_batches=[student_batch], aux_features=aux)
        if terms:
            model.zero_grad()
            sum(terms.values()).backward(retain_graph=True)
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), method


def test_simsiam_on_a_batch_of_one_is_zero_not_a_batchnorm_error():
    from hf_mmkd.distillation.mitr import SimSiamHead, simsiam_loss

    head = SimSiamHead(8).train()
    x = torch.randn(1, 8, requires_grad=True)
    loss = simsiam_loss(head, x, x)
    assert loss.item() == 0.0
    loss.backward()  # still on the graph


def test_unknown_method_kwargs_are_named():
    from hf_mmkd import MMKDConfig

    config = MMKDConfig(text_feature_dim=4, hidden_size=8, num_attention_heads=2)
    with pytest.raises(ValueError, match=r"method_kwargs \['kd_weight'\] are not arguments of method 'none'"):
        build_distillation_loss("none", config, kd_weight=0.3)
    with pytest.raises(ValueError, match=r"method_kwargs \['margn'\] are not arguments of method 'corrkd'"):
        build_distillation_loss("corrkd", config, margn=1.0)


def test_contrastive_diagnostics_by_hand():
    """Two anchors, three candidates each; anchor 0's positive is column 0, anchor 1's column 1.
    p(0, .) = softmax(ln 2, 0, 0) = (1/2, 1/4, 1/4): excess = ln(1/2) + ln 3; no negative above chance (1/3).
    p(1, .) = softmax(0, 0, ln 4) = (1/6, 1/6, 2/3): excess = ln(1/6) + ln 3; negative column 2 is above chance."""
    import math

    from hf_mmkd.distillation.functional import contrastive_diagnostics

    logits = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, math.log(4.0)]])
    positives = torch.tensor([[True, False, False], [False, True, False]])
    out = contrastive_diagnostics(logits, positives)
    expected = ((math.log(0.5) + math.log(3)) + (math.log(1 / 6) + math.log(3))) / 2
    assert out["pos_logprob_excess"] == pytest.approx(expected, rel=1e-6)
    assert out["active_negatives"] == pytest.approx(1 / 4)


def test_row_weights_scale_each_rows_contribution_by_hand():
    """Logit KD (regression): rows (s, t) = (1, 0) and (0, 2): squared errors 1 and 4; weights (1, 0.5) give
    (1 * 1 + 0.5 * 4) / 2 = 1.5 (not renormalised); SCD: row i's pairs are weighted by w_i."""
    from hf_mmkd.distillation import build_distillation_loss

    config = SimpleNamespace(task="regression", num_labels=1, hidden_size=2, fusion_dim=2)
    kd = build_distillation_loss("logit", config)
    s_out = SimpleNamespace(logits=torch.tensor([[1.0], [0.0]]))
    t_out = SimpleNamespace(logits=torch.tensor([[0.0], [2.0]]))
    weights = torch.tensor([1.0, 0.5])
    assert kd(t_out, [s_out], None)["loss_logit"].item() == pytest.approx(2.5)
    assert kd(t_out, [s_out], None, row_weights=weights)["loss_logit"].item() == pytest.approx(1.5)
    h_s = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    h_t = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    # pair losses: row 0: (0, (1 - 0.5)^2) -> mean 0.125; row 1: (0 (d = 1), 0.25) -> mean 0.125
    assert scd_loss(h_s, h_t, 1.0, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.125 / 2)


def test_corrkd_normalised_scd_with_automatic_margin_by_hand():
    """normalize=True compares unit vectors; margin='auto' is the mean distance between the teacher's own vectors
    of different rows. Teacher (1, 0), (0, 1): distance sqrt(2) = margin. Student (2, 0) -> (1, 0) and (0, 3) ->
    (0, 1): the same-row distances are 0 and the cross distances sqrt(2) = margin, so SCD = 0; a student (1, 1)/
    sqrt(2) for row 1 sits at distance sqrt(2 - sqrt(2)) from teacher row 0."""
    from hf_mmkd.distillation import build_distillation_loss

    config = SimpleNamespace(task="regression", num_labels=1, hidden_size=2, fusion_dim=2)
    loss = build_distillation_loss("corrkd", config, normalize=True, margin="auto", cpd_weight=0.0, rcd_weight=0.0)
    teacher = SimpleNamespace(fused=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), logits=torch.zeros(2, 1))
    student = SimpleNamespace(fused=torch.tensor([[2.0, 0.0], [0.0, 3.0]]), logits=torch.zeros(2, 1))
    labels = torch.tensor([1.0, -1.0])
    h_t, h_s, margin = loss.representations(teacher, student)
    assert margin == pytest.approx(math.sqrt(2.0), rel=1e-6)
    assert loss(teacher, [student], labels)["loss_scd"].item() == pytest.approx(0.0, abs=1e-6)
    student.fused = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    same = 2.0 - math.sqrt(2.0)  # |(0, 1) - (1, 1)/sqrt(2)|^2
    cross = (math.sqrt(2.0) - math.sqrt(2.0 - math.sqrt(2.0))) ** 2  # row 1 vs teacher row 0, inside the margin
    assert loss(teacher, [student], labels)["loss_scd"].item() == pytest.approx((same + cross) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="margin must be"):
        build_distillation_loss("corrkd", config, margin="median")


def test_logit_kd_l1_distance_by_hand():
    """distance='l1': weight * mean |s - t|; rows (s, t) = (1, 3), (0, -1) -> (2 + 1) / 2 = 1.5, x weight 2 = 3.
    MSE on the same rows: (4 + 1) / 2 = 2.5 -> 5."""
    from hf_mmkd.distillation import build_distillation_loss

    config = SimpleNamespace(task="regression", num_labels=1, hidden_size=2, fusion_dim=2)
    s_out = SimpleNamespace(logits=torch.tensor([[1.0], [0.0]]))
    t_out = SimpleNamespace(logits=torch.tensor([[3.0], [-1.0]]))
    l1 = build_distillation_loss("logit", config, weight=2.0, distance="l1")
    assert l1(t_out, [s_out], None)["loss_logit"].item() == pytest.approx(3.0)
    mse = build_distillation_loss("logit", config, weight=2.0)
    assert mse(t_out, [s_out], None)["loss_logit"].item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="distance must be"):
        build_distillation_loss("logit", config, distance="huber")


def test_neutral_distance_by_hand():
    """Regression: (y - c)^2 with c the range's midpoint (ratings 1..5 -> c = 3); classes: KL(u || softmax(z))."""
    from hf_mmkd.distillation.base import neutral_distance

    spec = {"version": 1, "name": "r", "task": "regression", "label_column": "label", "label_range": [1, 5],
            "neutral_band": [2.5, 3.5], "class_names": None, "modalities": {"audio": {"kind": "features", "dim": 2}},
            "source": "t", "splits": {"train": {"rows": 2, "audio": 2, "left_out": []}}}
    config = SimpleNamespace(task="regression", num_labels=1, hidden_size=2, fusion_dim=2, dataset_spec=spec)
    assert neutral_distance(torch.tensor([[3.0], [1.0], [4.5]]), config).tolist() == pytest.approx([0.0, 4.0, 2.25])
    mosi = SimpleNamespace(task="regression", num_labels=1, hidden_size=2, fusion_dim=2)  # no spec: [-3, 3], c = 0
    assert neutral_distance(torch.tensor([[-0.5]]), mosi).tolist() == pytest.approx([0.25])
    cls = SimpleNamespace(task="classification", num_labels=2, hidden_size=2, fusion_dim=2)
    z = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = (3/4, 1/4); uniform
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert neutral_distance(z, cls).tolist() == pytest.approx([expected, 0.0], abs=1e-6)
