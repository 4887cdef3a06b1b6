"""Independent text backbones for teacher and student (`--teacher_text_backbone`): two tiny random BERTs with
different tokenizers; the teacher reads its own ids everywhere (training, cache, online forward)."""

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from test_processing import WORDS, tiny_tokenizer
from test_quality_benchmark import load_module
from tiny import tiny_bert_config
from transformers import BertConfig, BertModel, BertTokenizer

from hf_mmkd import training
from hf_mmkd.data.collator import MMKDDataCollator
from hf_mmkd.data.missing import model_inputs, teacher_view
from hf_mmkd.data.prepared import load_prepared
from hf_mmkd.inference import load_model
from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments

TINY = ["--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--hidden_size", "8", "--num_attention_heads", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--report_rates", "0.0", "--logging_steps", "100", "--missing_protocol", "p2", "--max_text_length", "16"]


def save_backbone(folder, config, tokenizer):
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def other_tokenizer():
    """A word-piece vocabulary of letters only, in another order: other ids and more tokens per word."""
    letters = "zyxwvutsrqponmlkjihgfedcba"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(letters) + [f"##{c}" for c in letters]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_backbone")
    student_bb = save_backbone(root / "bert_student", tiny_bert_config(), tiny_tokenizer())
    teacher_bb = save_backbone(root / "bert_teacher", BertConfig(
        vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=30,
        max_position_embeddings=64), other_tokenizer())
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        y = rng.uniform(-3, 3, n).astype(np.float32)
        text = [" ".join(rng.choice(WORDS[:4] if v > 0 else WORDS[4:], 3)) for v in y]
        data[split] = {"id": np.array([f"{split}_{i}" for i in range(n)], dtype=object),
                       "raw_text": np.array(text, dtype=object), "regression_labels": y,
                       "audio": rng.standard_normal((n, 1, 5)).astype(np.float32),
                       "audio_lengths": np.ones(n, dtype=np.int64)}
    (root / "data.pkl").write_bytes(pickle.dumps(data))
    prepare = load_module(REPO_ROOT / "dataset_scripts" / "prepare_mmsa.py", "prepare_mmsa")
    assert prepare.main([str(root / "data.pkl"), str(root / "prepared"), "--label-range", "-3", "3"]) == 0
    return root, student_bb, teacher_bb


def test_teacher_and_student_get_their_own_backbones_end_to_end(setup):
    root, student_bb, teacher_bb = setup
    out = root / "run"
    assert training.main(["--dataset", str(root / "prepared"), "--output_dir", str(out), "--method", "logit",
                          "--text_backbone", str(student_bb), "--teacher_text_backbone", str(teacher_bb),
                          *TINY]) == 0
    teacher, student = load_model(out / "teacher", device="cpu"), load_model(out / "student", device="cpu")
    assert (teacher.config.text_config.hidden_size, teacher.config.text_config.num_hidden_layers) == (24, 2)
    assert (student.config.text_config.hidden_size, student.config.text_config.num_hidden_layers) == (32, 1)
    assert teacher.config.text_config.vocab_size == 120 and student.config.text_config.vocab_size == 99
    # each checkpoint carries its own tokenizer; the teacher's provenance names its own backbone
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "teacher").get_vocab() == other_tokenizer().get_vocab()
    assert AutoTokenizer.from_pretrained(out / "student").get_vocab() == tiny_tokenizer().get_vocab()
    provenance = json.loads((out / "teacher" / "hf_mmkd_provenance.json").read_text())
    assert provenance["model"]["text_backbone"] == str(teacher_bb)
    assert json.loads((out / "student" / "hf_mmkd_provenance.json").read_text())["model"]["text_backbone"] == \
        str(student_bb)
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["student"]["eval_r0_MAE"]) and np.isfinite(results["teacher"]["eval_r0_MAE"])

    # The frozen teacher's cache holds, per training row, the teacher's output on ITS OWN ids.
    student_tok = training.teacher_tokenizer_for(out / "student", None)  # no student tokenizer: nothing to compare
    assert student_tok is None
    own = training.teacher_tokenizer_for(out / "teacher", tiny_tokenizer())
    assert own is not None and own.get_vocab() == other_tokenizer().get_vocab()
    assert training.teacher_tokenizer_for(out / "student", tiny_tokenizer()) is None  # same ids: no second set
    train = load_prepared(root / "prepared")["train"]
    collator = MMKDDataCollator(student.config, tokenizer=tiny_tokenizer(), teacher_tokenizer=own,
                                max_text_length=16, return_row_keys=True)
    batch = collator([train[i] for i in range(4)])
    words = train[0]["raw_text"].split()
    assert batch["input_ids"][0, 1:4].tolist() == [tiny_tokenizer().vocab[w] for w in words]
    letters = [other_tokenizer().vocab[c if k == 0 else "##" + c] for k, c in enumerate(words[0])]
    assert batch["teacher_input_ids"][0, 1:1 + len(words[0])].tolist() == letters
    assert "teacher_input_ids" not in model_inputs(batch)  # the student never reads them
    args = MMKDTrainingArguments(output_dir=str(root / "cache"), method="logit", use_cpu=True, report_to="none",
                                 missing_protocol="p2", per_device_eval_batch_size=5)
    trainer = MMKDTrainer(model=student, teacher=teacher, args=args, train_dataset=train, data_collator=collator)
    trainer.fill_teacher_cache()
    assert len(trainer._teacher_cache.rows) == len(train) == 24
    teacher.eval()
    with torch.no_grad():
        full = collator([train[i] for i in range(len(train))])
        right = teacher(**model_inputs(teacher_view(full)))
        wrong = teacher(**model_inputs(full))  # the student's ids fed to the teacher: another text representation
    cached = trainer._teacher_cache.lookup(full["row_key"], "cpu")
    torch.testing.assert_close(cached.logits, right.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.text_pooled, right.text_pooled, atol=1e-5, rtol=0)
    assert (cached.text_pooled - wrong.text_pooled).abs().max() > 1e-2


def test_online_teacher_with_its_own_backbone_and_bad_combinations(setup, capsys):
    root, student_bb, teacher_bb = setup
    out = root / "online"
    assert training.main(["--dataset", str(root / "prepared"), "--output_dir", str(out), "--method", "crossmodal",
                          "--text_backbone", str(student_bb), "--teacher_text_backbone", str(teacher_bb),
                          *TINY]) == 0
    assert load_model(out / "student", device="cpu").config.text_config.hidden_size == 32
    capsys.readouterr()
    assert training.main(["--dataset", str(root / "prepared"), "--output_dir", str(root / "mitr"), "--method",
                          "mitr", "--text_backbone", str(student_bb), "--teacher_text_backbone", str(teacher_bb),
                          *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs teacher and student as one network" in err[0]
    assert training.main(["--dataset", str(root / "prepared"), "--output_dir", str(root / "nostudent"),
                          "--teacher_text_backbone", str(teacher_bb), *TINY]) == 1
    assert "--teacher_text_backbone needs --text_backbone" in capsys.readouterr().err
    assert not (root / "mitr").exists() and not (root / "nostudent").exists()


def test_online_teacher_reads_its_own_ids(setup):
    """MM-CKD trains its teacher online: every teacher forward of a training step gets the teacher's ids, every
    student forward the student's."""
    root, student_bb, teacher_bb = setup
    out = root / "run"
    if not (out / "teacher").is_dir():  # the first test's run
        pytest.skip("needs test_teacher_and_student_get_their_own_backbones_end_to_end")
    teacher, student = load_model(out / "teacher", device="cpu"), load_model(out / "student", device="cpu")
    own = training.teacher_tokenizer_for(out / "teacher", tiny_tokenizer())
    collator = MMKDDataCollator(student.config, tokenizer=tiny_tokenizer(), teacher_tokenizer=own,
                                max_text_length=16, return_row_keys=True)
    train = load_prepared(root / "prepared")["train"]
    args = MMKDTrainingArguments(output_dir=str(root / "mmckd"), method="mmckd", use_cpu=True, report_to="none",
                                 missing_protocol="p2")
    trainer = MMKDTrainer(model=student, teacher=teacher, args=args, train_dataset=train, data_collator=collator,
                          processing_class=tiny_tokenizer())  # the student's [UNK] for dropped tokens
    seen = {"teacher": [], "student": []}
    hooks = [m.mmkd.encoders["text"].backbone.register_forward_pre_hook(
        lambda mod, a, kw, who=who: seen[who].append(kw["input_ids"]), with_kwargs=True)
        for who, m in (("teacher", teacher), ("student", student))]
    batch = collator([train[i] for i in range(6)])
    try:
        trainer.model.train()
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    finally:
        for h in hooks:
            h.remove()

    def rows_of(ids, full):  # every row the backbone read is a row of `full` (the views may select rows)
        return ids.shape[1] == full.shape[1] and all(any(torch.equal(r, f) for f in full) for r in ids)

    assert batch["teacher_input_ids"].shape[1] != batch["input_ids"].shape[1]  # 16 letter pieces vs 5 words
    assert seen["teacher"] and all(rows_of(ids, batch["teacher_input_ids"]) for ids in seen["teacher"])
    assert seen["student"] and all(ids.shape[1] == batch["input_ids"].shape[1] for ids in seen["student"])
