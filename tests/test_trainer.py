"""MMKDTrainer: every method trains 3 steps with each named term logged; gradient accumulation keeps the loss;
frozen teachers get no gradient, online ones do; the frozen teacher's cached outputs equal fresh ones."""

import math

import pytest
import torch
from tiny import feature_config_kwargs

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data.collator import MMKDDataCollator
from hf_mmkd.data.demo import make_demo_dataset
from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs
from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments

TERMS = {
    "none": ["loss_task"],
    "logit": ["loss_task", "loss_logit"],
    "corrkd": ["loss_task", "loss_scd", "loss_cpd", "loss_rcd"],
    "mmckd": ["loss_task", "loss_task_teacher", "loss_mvsc"],
    "mitr": ["loss_task", "loss_task_teacher", "loss_attra", "loss_recon", "loss_kd_tf", "loss_kd_mib", "loss_kd_ss"],
    "crossmodal": ["loss_task", "loss_task_teacher", "loss_nce_ts", "loss_nce_ta", "loss_adv"],
}


def tiny_dataset(n=16, seed=0):
    sizes = {"train": n}
    return make_demo_dataset(sizes=sizes, dims={"text": 7, "audio": 5, "vision": 6}, lengths=(3, 6), seed=seed)["train"]


def make_trainer(tmp_path, method, teacher=None, **overrides):
    config = MMKDConfig(**feature_config_kwargs(), dropout=0.0, head_dropout=0.0)
    student = MMKDForSentiment(config)
    if teacher is None and method in ("logit", "corrkd", "mmckd", "crossmodal"):
        teacher = MMKDForSentiment(config)
    settings = dict(
        output_dir=str(tmp_path / method), method=method, max_steps=3, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, learning_rate=1e-3, logging_steps=1, eval_strategy="no",
        report_to="none", use_cpu=True, save_strategy="no", seed=0, data_seed=0, dataloader_num_workers=0,
        missing_protocol="p2", eval_missing_protocol="p2", eval_missing_rate=0.5,
    )
    args = MMKDTrainingArguments(**{**settings, **overrides})
    collator = MMKDDataCollator(config, return_row_keys=True)
    return MMKDTrainer(model=student, teacher=teacher, args=args, train_dataset=tiny_dataset(),
                       eval_dataset=tiny_dataset(8, seed=1), data_collator=collator), teacher


@pytest.mark.parametrize("method", list(TERMS))
def test_three_steps_log_every_term(tmp_path, method):
    trainer, teacher = make_trainer(tmp_path, method)
    before = {n: p.clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3
    for entry in logged:
        for term in TERMS[method]:
            assert math.isfinite(entry[term]), (term, entry)
        assert math.isfinite(entry["loss"])
    metrics = trainer.evaluate()
    for term in TERMS[method]:
        assert math.isfinite(metrics[f"eval_{term}"])
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("students.0.") for n in moved)
    method_params = [n for n, _ in trainer.model.method.named_parameters()]
    if method_params:  # the method's own networks are optimised too
        assert any(n.startswith("method.") for n in moved)
    if method in ("mmckd", "crossmodal"):  # online: the teacher trains with the student
        assert any(n.startswith("teacher.") for n in moved)


@pytest.mark.parametrize("method", ["logit", "corrkd"])
def test_frozen_teacher_gets_no_gradient_and_does_not_move(tmp_path, method):
    trainer, teacher = make_trainer(tmp_path, method)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    trainer.train()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())
    assert not any(n.startswith("teacher.") for n, _ in trainer.model.named_parameters())


def test_online_teacher_receives_gradients(tmp_path):
    trainer, teacher = make_trainer(tmp_path, "mmckd")
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.parameters())


def test_gradient_accumulation_keeps_the_loss(tmp_path):
    """2 micro-batches of 2 with accumulation == 1 batch of 4: same logged loss, same parameters after."""
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        trainer, _ = make_trainer(tmp_path, "logit", per_device_train_batch_size=batch_size,
                                  gradient_accumulation_steps=accumulation, missing_protocol="none")
        trainer.args.max_steps = 1
        # Same teacher and student initial weights in both runs.
        torch.manual_seed(1)
        for p in trainer.model.parameters():
            p.data.normal_(0, 0.1)
        for p in trainer._frozen_teacher.parameters():
            p.data.normal_(0, 0.1)
        trainer.train()
        loss = trainer.state.log_history[0]["loss"]
        results.append((loss, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}))
    (loss_a, params_a), (loss_b, params_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert all(torch.allclose(params_a[n], params_b[n], atol=1e-6) for n in params_a)


def test_cached_teacher_outputs_equal_fresh_ones(tmp_path):
    trainer, teacher = make_trainer(tmp_path, "corrkd")
    assert trainer._teacher_cache is not None
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (3, 1, 7, 0)])
    first = trainer._frozen_teacher_outputs(batch, train=True)
    cached = trainer._frozen_teacher_outputs(batch, train=True)
    assert len(trainer._teacher_cache.rows) == 4
    for name in ("logits", "fused", "audio_pooled", "audio_sequence", "audio_step_mask"):
        assert torch.allclose(getattr(first, name), getattr(cached, name), atol=1e-6), name
    # A batch in another order, with rows seen before, is served from the cache with the same values.
    reordered = trainer.data_collator([trainer.train_dataset[i] for i in (0, 3)])
    again = trainer._teacher_cache.lookup(reordered["row_key"], "cpu")
    assert torch.allclose(again.logits, torch.stack([first.logits[3], first.logits[0]]), atol=1e-6)


def test_bad_method_and_missing_teacher_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown distillation method 'hinton_kd'"):
        MMKDTrainingArguments(output_dir=str(tmp_path), method="hinton_kd", use_cpu=True)
    with pytest.raises(ValueError, match="method_kwargs is not valid JSON"):
        MMKDTrainingArguments(output_dir=str(tmp_path), method="corrkd", method_kwargs="{margin: 1", use_cpu=True)
    config = MMKDConfig(**feature_config_kwargs())
    args = MMKDTrainingArguments(output_dir=str(tmp_path), method="corrkd", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="needs a teacher"):
        MMKDTrainer(model=MMKDForSentiment(config), args=args, train_dataset=tiny_dataset())
    args = MMKDTrainingArguments(output_dir=str(tmp_path), missing_protocol="p1", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="p1 needs a rate"):
        MMKDTrainer(model=MMKDForSentiment(config), args=args, train_dataset=tiny_dataset())


def test_backbone_learning_rate_gets_its_own_groups(tmp_path):
    from tiny import backbone_config_kwargs

    config = MMKDConfig(**{**backbone_config_kwargs(), "vision_config": None, "audio_config": None},
                        audio_feature_dim=5)
    args = MMKDTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, backbone_learning_rate=5e-5,
                                 use_cpu=True, report_to="none", missing_protocol="none")
    trainer = MMKDTrainer(model=MMKDForSentiment(config), args=args, train_dataset=tiny_dataset())
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(trainer.model.named_parameters())
    backbone = [n for n in named if ".backbone." in n]
    assert backbone and all(lr_of[id(named[n])] == 5e-5 for n in backbone)
    assert all(lr_of[id(p)] == 1e-3 for n, p in named.items() if ".backbone." not in n)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_mmckd_evaluates_on_the_protocol_view_not_on_its_training_patterns(tmp_path):
    trainer, _ = make_trainer(tmp_path, "mmckd")
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(6)])
    train_views = trainer._student_batches(batch, train=True)
    # The six incomplete patterns of three modalities, then the P2 training view itself (all modalities, steps
    # dropped): each pattern view is that same P2 view restricted to the pattern.
    assert len(train_views) == 7
    p2_view = train_views[-1]
    assert p2_view["audio_dropped"].any() and not torch.equal(p2_view["audio_features"], batch["audio_features"])
    for view, pattern in zip(train_views[:6], [("text",), ("audio",), ("vision",), ("text", "audio"),
                                                ("text", "vision"), ("audio", "vision")]):
        keep = torch.tensor([m in pattern for m in ("text", "audio", "vision")])
        assert torch.equal(view["modality_mask"], p2_view["modality_mask"] & keep)
        assert torch.equal(view["audio_features"], p2_view["audio_features"])
    trainer.args.missing_protocol = "none"  # no training protocol: the six pattern views of the batch itself
    assert len(trainer._student_batches(batch, train=True)) == 6
    (eval_view,) = trainer._student_batches(batch, train=False)
    expected = trainer.eval_simulator(batch)
    assert torch.equal(eval_view["modality_mask"], expected["modality_mask"])
    assert torch.equal(eval_view["audio_features"], expected["audio_features"])


def test_distillation_start_and_warmup_scale_the_method_terms_only(tmp_path):
    """start 2, warmup 4: loss = task + clip((step - 2) / 4, 0, 1) * method terms; logged terms stay unscaled."""
    trainer, _ = make_trainer(tmp_path, "mitr", distillation_start_step=2, distillation_warmup_steps=4,
                              missing_protocol="none")
    trainer.model.eval()  # no dropout; the method terms stay as they are (BatchNorm uses running stats)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(4)])
    for step, scale in ((0, 0.0), (2, 0.0), (3, 0.25), (4, 0.5), (6, 1.0), (11, 1.0)):
        trainer.state.global_step = step
        trainer.model.train()
        trainer.model.students[0].eval()
        trainer.model.method.eval()
        loss = trainer.compute_loss(trainer.model, batch)
        terms = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        task = terms["loss_task"] + terms["loss_task_teacher"]
        method = sum(v for k, v in terms.items() if not k.startswith("loss_task"))
        assert method != 0.0
        assert loss.item() == pytest.approx(task + scale * method, rel=1e-5, abs=1e-6), step
    trainer.args.distillation_warmup_steps = 0  # no ramp: off before the start step, full weight from it
    for step, scale in ((1, 0.0), (2, 1.0)):
        trainer.state.global_step = step
        assert trainer.distillation_scale() == scale
    with pytest.raises(ValueError, match="distillation_warmup_steps must be >= 0"):
        MMKDTrainingArguments(output_dir=str(tmp_path), distillation_warmup_steps=-1, use_cpu=True)


def _eval_mode(trainer):
    """Training-mode code paths (views, terms) without dropout noise, so values can be recomputed by hand; the
    weights are spread out so that the tiny model's output depends on its inputs."""
    torch.manual_seed(3)
    for p in trainer.model.parameters():
        p.data.normal_(0, 0.3)
    trainer.model.train()
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def test_mitr_logs_each_views_own_task_loss(tmp_path):
    """The weight-shared forward runs [complete; masked] jointly; each view's task loss is over its own rows."""
    trainer, _ = make_trainer(tmp_path, "mitr", missing_protocol="p2")
    _eval_mode(trainer)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(6)])
    trainer.state.global_step = 5  # a step whose P2 draw drops steps in some rows
    trainer.compute_loss(trainer.model, batch)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    trainer._draw = (-1, 0)  # redraw the same view
    (view,) = trainer._student_batches(batch, train=True)
    student = trainer.model.student

    complete = student(**model_inputs(batch)).loss.item()
    masked = student(**model_inputs(view)).loss.item()
    assert complete != pytest.approx(masked, rel=1e-3)
    assert logged["loss_task_teacher"] == pytest.approx(complete, rel=1e-5)
    assert logged["loss_task"] == pytest.approx(masked, rel=1e-5)


def test_mmckd_sums_the_task_losses_of_its_views(tmp_path):
    """MM-CKD: L = L_task(T) + sum_k L_task(S_k) + lambda L_MVSC; every view carries a full task weight."""
    trainer, _ = make_trainer(tmp_path, "mmckd")
    _eval_mode(trainer)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(6)])
    trainer.state.global_step = 3
    trainer.compute_loss(trainer.model, batch)
    logged = trainer._metrics["train"]["loss_task"][-1]
    trainer._draw = (-1, 0)
    views = trainer._student_batches(batch, train=True)
    from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs

    per_view = [trainer.model.student(**model_inputs(v)).loss.item() for v in views]
    assert len(per_view) == 7
    assert logged == pytest.approx(sum(per_view), rel=1e-5)


def test_crossmodal_auxiliary_model_is_separate_from_the_teacher(tmp_path):
    """A (the auxiliary-modality model) is its own network: it starts from the teacher's audio encoder, reads
    only audio, trains on its own task loss, and shares no parameter with the teacher."""
    trainer, teacher = make_trainer(tmp_path, "crossmodal", auxiliary_modality="audio")
    aux = trainer.model.auxiliary
    assert aux.config.modalities == ["audio"]
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_params for p in aux.parameters())
    for (n, p), (_, q) in zip(aux.mmkd.encoders["audio"].named_parameters(),
                              teacher.mmkd.encoders["audio"].named_parameters()):
        assert torch.equal(p, q), n  # initialised from the teacher's audio encoder
    before = {n: p.clone() for n, p in aux.named_parameters()}
    trainer.train()
    assert all(math.isfinite(h["loss_task_aux"]) for h in trainer.state.log_history if "loss" in h)
    assert any(not torch.equal(p, before[n]) for n, p in aux.named_parameters())


def test_diagnostics_log_gradient_norms_and_write_a_jsonl(tmp_path):
    import json

    trainer, _ = make_trainer(tmp_path, "corrkd", diagnostics_steps=2)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "corrkd" / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2]
    for r in records:
        for key in ("grad_loss_task", "grad_loss_scd", "ratio_loss_scd", "ratio_loss_rcd", "norm_fused_student",
                    "norm_fused_teacher", "teacher_mae", "scd_active_negatives", "rcd_mi_excess_target"):
            assert math.isfinite(r[key]), key
        assert r["ratio_loss_scd"] == pytest.approx(r["grad_loss_scd"] / r["grad_loss_task"])
        assert 0.0 <= r["scd_active_negatives"] <= 1.0
    assert any("diag_grad_loss_task" in h for h in trainer.state.log_history)


def test_diagnostic_gradient_norm_matches_a_manual_backward(tmp_path):
    from hf_mmkd.trainer import diagnostics

    trainer, _ = make_trainer(tmp_path, "logit")
    _eval_mode(trainer)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(6)])
    trainer.state.global_step = 1
    student_batches = trainer._student_batches(batch, train=True)
    teacher_out = trainer._frozen_teacher_outputs(batch, train=False)
    loss, terms, _ = trainer.model(teacher_batch=batch, student_batches=student_batches, teacher_out=teacher_out)
    values = diagnostics(trainer.model, terms, batch, student_batches)
    terms["loss_logit"].backward(retain_graph=True)
    manual = torch.sqrt(sum((p.grad ** 2).sum() for p in trainer.model.student.parameters() if p.grad is not None))
    assert values["grad_loss_logit"] == pytest.approx(manual.item(), rel=1e-5)
    t = teacher_out.logits.view(-1)
    assert values["teacher_mae"] == pytest.approx((t - batch["labels"]).abs().mean().item(), rel=1e-5)


def test_balance_terms_caps_each_gradient_ratio_and_never_amplifies(tmp_path):
    """First update: a term whose gradient ratio r to the task exceeds the cap gets the scale cap / r, the others
    keep 1 (never amplified); the scales enter the loss (not the logged terms) and are saved with the model's
    state."""
    from hf_mmkd.trainer.diagnostics import _grad_norm

    trainer, _ = make_trainer(tmp_path, "corrkd", balance_terms=True, balance_ratio=0.5)
    _eval_mode(trainer)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(6)])
    trainer.state.global_step = 0
    student_batches = trainer._student_batches(batch, train=True)
    teacher_out = trainer._frozen_teacher_outputs(batch, train=False)
    wrapper = trainer.model
    loss, terms, _ = wrapper(teacher_batch=batch, student_batches=student_batches, teacher_out=teacher_out)
    params = [p for p in wrapper.student.parameters() if p.requires_grad]
    task = _grad_norm(terms["loss_task"], params)
    ratios = {k: _grad_norm(terms[k], params) / task for k in wrapper.method.term_names}
    trainer._update_term_scales(wrapper, terms)
    scales = {k: float(v) for k, v in wrapper.term_scales().items()}
    for name, r in ratios.items():
        assert scales[name] == pytest.approx(max(min(0.5 / r, 1.0), 1e-3), rel=1e-4), name
    assert any(r > 0.5 for r in ratios.values()) and any(r < 0.5 for r in ratios.values())  # both cases seen
    assert "log_term_scales" in wrapper.state_dict()
    loss2, terms2, _ = wrapper(teacher_batch=batch, student_batches=student_batches, teacher_out=teacher_out)
    assert loss2.item() == pytest.approx(terms2["loss_task"].item() + sum(scales[k] * terms2[k].item()
                                                                         for k in wrapper.method.term_names), rel=1e-5)
    with pytest.raises(ValueError, match="balance_ratio must be > 0"):
        MMKDTrainingArguments(output_dir=str(tmp_path), balance_ratio=0.0, use_cpu=True)


def test_recoverability_weights_follow_the_kept_share_of_the_important_modalities(tmp_path):
    """w = clip((r - floor) / (1 - floor), 0, 1), r = sum_m a_m kept_m / sum_m a_m over the row's modalities."""
    from hf_mmkd.data.missing import kept_fraction

    trainer, _ = make_trainer(tmp_path, "logit", recoverability_floor=0.25)
    trainer._importance = torch.tensor([0.5, 0.25, 0.25])
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(8)])
    trainer.state.global_step = 2
    (view,) = trainer._student_batches(batch, train=True)
    (weights,) = trainer._row_weights(batch, [view])
    kept = kept_fraction(batch, view)
    r = (kept * torch.tensor([0.5, 0.25, 0.25])).sum(1)
    assert torch.allclose(weights, ((r - 0.25) / 0.75).clamp(0, 1))
    assert (weights < 1).any()
    assert trainer._row_weights(batch, [batch])[0].eq(1).all()  # a complete view keeps everything


def test_recoverability_fallback_pulls_unrecoverable_rows_to_the_neutral_point(tmp_path):
    """loss_fallback = lambda * sum_i (1 - w_i) (y_hat_i - 0)^2 / B on MOSI's scale; with lambda equal to the logit
    weight, logit KD + fallback = a logit term whose targets moved to w_i y^t (the neutral point is 0)."""
    trainer, teacher = make_trainer(tmp_path, "logit", recoverability_floor=0.25, recoverability_fallback=0.5)
    trainer._importance = torch.tensor([0.5, 0.25, 0.25])
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(8)])
    trainer.state.global_step = 2
    views = trainer._student_batches(batch, train=True)
    (w,) = trainer._row_weights(batch, views)
    assert (w < 1).any() and (w > 0).any()
    wrapper = trainer.model
    wrapper.eval()  # no dropout (and the same forward twice)
    teacher_out = teacher(**model_inputs(batch))
    _, terms, out = wrapper(teacher_batch=batch, student_batches=views, teacher_out=teacher_out, row_weights=[w],
                            fallback=0.5)
    y, t = out.logits.view(-1), teacher_out.logits.view(-1)
    assert terms["loss_fallback"].item() == pytest.approx(0.5 * ((1 - w) * y.pow(2)).sum().item() / 8, rel=1e-5)
    _, plain, _ = wrapper(teacher_batch=batch, student_batches=views, teacher_out=teacher_out, row_weights=[w])
    assert "loss_fallback" not in plain
    shrunk = (y - w * t).pow(2).mean() + ((w * (1 - w)) * t.pow(2)).mean()  # w (y-t)^2 + (1-w) y^2, expanded
    both = terms["loss_logit"] / trainer.args.method_kwargs.get("weight", 1.0) + 2 * terms["loss_fallback"]
    assert both.item() == pytest.approx(shrunk.item(), rel=1e-5)
    with pytest.raises(ValueError, match="recoverability_fallback needs recoverability_floor"):
        MMKDTrainingArguments(output_dir=str(tmp_path), recoverability_fallback=1.0, use_cpu=True)


@pytest.mark.parametrize("method", ["corrkd", "mmckd"])
def test_response_weight_adds_the_logit_term_to_a_representation_method(tmp_path, method):
    """loss_response = weight * mean over views of mean_i (y_hat_i^s - y_hat_i^t)^2, teacher detached; logged,
    trained (3 steps), and refused where it has no meaning."""
    trainer, teacher = make_trainer(tmp_path, method, response_weight=0.5)
    batch = trainer.data_collator([tiny_dataset()[i] for i in range(8)])
    views = trainer._student_batches(batch, train=True)
    wrapper = trainer.model
    wrapper.eval()
    teacher_out = teacher(**model_inputs(batch))
    _, terms, _ = wrapper(teacher_batch=batch, student_batches=views,
                          teacher_out=None if method == "mmckd" else teacher_out)
    t = (wrapper.teacher(**model_inputs(batch)) if method == "mmckd" else teacher_out).logits.view(-1)
    expected = torch.stack([(wrapper._run(wrapper.student, [v])[0].logits.view(-1) - t).pow(2).mean()
                            for v in views]).mean()
    assert terms["loss_response"].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    wrapper.train()
    trainer.train()
    assert all(math.isfinite(h["loss_response"]) for h in trainer.state.log_history if "loss" in h)
    for bad, match in (("none", "has no teacher"), ("logit", "is that term already")):
        with pytest.raises(ValueError, match=match):
            MMKDTrainingArguments(output_dir=str(tmp_path), method=bad, response_weight=1.0, use_cpu=True)
    with pytest.raises(ValueError, match="response_weight must be >= 0"):
        MMKDTrainingArguments(output_dir=str(tmp_path), method=method, response_weight=-1.0, use_cpu=True)


def test_eval_missing_rates_select_on_the_mean_over_rates(tmp_path):
    """Each rate's metrics under eval_r<rate>_*, their mean under eval_* (what metric_for_best_model reads); each
    rate's view is the deterministic P2 view of that rate; bad settings are refused."""
    trainer, _ = make_trainer(tmp_path, "logit", eval_missing_rates=[0.0, 0.9])
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx((metrics["eval_r0_loss"] + metrics["eval_r0.9_loss"]) / 2)
    assert metrics["eval_r0_loss"] != metrics["eval_r0.9_loss"]
    assert "eval_runtime" not in metrics and trainer.eval_simulator.rate == 0.5  # the default view is restored
    view = MissingModalitySimulator("p2", 0.9, training=False, seed=trainer.args.missing_seed,
                                    unk_token_id=trainer._unk_token_id)
    assert trainer.evaluate_view(view)["eval_loss"] == pytest.approx(metrics["eval_r0.9_loss"])
    for bad, match in (({"eval_missing_rates": []}, "non-empty list"), ({"eval_missing_rates": [1.5]}, "in \\[0, 1\\]"),
                       ({"eval_missing_rates": [0.5], "eval_missing_protocol": "p5"}, "rate protocols")):
        with pytest.raises(ValueError, match=match):
            MMKDTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **bad)


def test_train_missing_rates_reach_the_student_view_and_bad_settings_are_refused(tmp_path):
    """The training view of --train_missing_rates drops every modality of a row at one listed rate."""
    trainer, _ = make_trainer(tmp_path, "none", train_missing_rates=[0.9])
    assert trainer._train_simulator(seed=5).train_rates == (0.9,)
    assert make_trainer(tmp_path, "none")[0]._train_simulator(seed=5).train_rates is None  # LNLN's draw
    bad_settings = (({"train_missing_rates": []}, "non-empty list"),
                    ({"train_missing_rates": [1.5]}, "in \\[0, 1\\]"),
                    ({"train_missing_rates": [0.5], "missing_protocol": "p3"},
                     "P2's training draw; missing_protocol is 'p3'"))
    for bad, match in bad_settings:
        with pytest.raises(ValueError, match=match):
            MMKDTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **bad)


def test_modality_importance_from_the_teacher(tmp_path):
    trainer, teacher = make_trainer(tmp_path, "logit", recoverability_floor=0.5)
    importance = trainer.modality_importance()
    assert importance.shape == (3,) and importance.sum().item() == pytest.approx(1.0)
    assert (importance >= 0).all()


def test_cross_fitted_teachers_give_each_training_row_an_out_of_fold_response(tmp_path):
    config = MMKDConfig(**feature_config_kwargs(), dropout=0.0, head_dropout=0.0)
    torch.manual_seed(5)
    folds = [MMKDForSentiment(config), MMKDForSentiment(config)]
    trainer, teacher = make_trainer(tmp_path, "corrkd")
    trainer._fold_teachers = folds
    trainer.fill_teacher_cache()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs

    cached = trainer._teacher_cache.lookup(batch["row_key"], "cpu")
    with torch.no_grad():
        full = teacher(**model_inputs(batch))
        per_fold = [f(**model_inputs(batch)) for f in folds]
    fold_of = batch["row_key"] % 2
    expected = torch.where(fold_of[:, None] == 0, per_fold[0].logits, per_fold[1].logits)
    assert torch.allclose(cached.logits, expected, atol=1e-5)
    assert torch.allclose(cached.fused, full.fused, atol=1e-5)  # one representation space: the full teacher's
    assert set(fold_of.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="serve frozen-teacher methods"):
        make_trainer(tmp_path, "mmckd")[0].__class__(model=MMKDForSentiment(config), teacher=teacher,
                                                      fold_teachers=folds, args=trainer.args.__class__(
                                                          output_dir=str(tmp_path), method="mmckd", use_cpu=True,
                                                          report_to="none"))


def test_importance_model_serves_a_method_without_a_teacher(tmp_path):
    """MITR-DNet has no frozen or online teacher: a trained model passed as `importance_model` measures the
    modality importance instead of the uniform default."""
    config = MMKDConfig(**feature_config_kwargs(), dropout=0.0, head_dropout=0.0)
    torch.manual_seed(7)
    reference = MMKDForSentiment(config)
    for p in reference.parameters():
        p.data.normal_(0, 0.3)
    trainer, _ = make_trainer(tmp_path, "mitr", recoverability_floor=0.5)
    assert torch.allclose(trainer.modality_importance(), torch.full((3,), 1 / 3))
    trainer._importance, trainer._importance_model = None, reference
    importance = trainer.modality_importance()
    assert importance.sum().item() == pytest.approx(1.0) and not torch.allclose(importance, torch.full((3,), 1 / 3))
