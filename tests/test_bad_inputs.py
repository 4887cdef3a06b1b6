"""Bad inputs across the public surface: ONE table, one test per row, each asserting the message.

Each row names a surface, a situation, the outcome and the text the user sees:
- `error`: a Python call raises; the exception text must contain `expect` ("…" stands for a path or a value).
- `exit`: a command (dataset_scripts/*.py, train.py) ends with a non-zero exit status and `expect` on stderr,
  and leaves no output folder and no temporary files behind. The commands run in-process through their real
  `if __name__ == "__main__"` blocks (runpy, with sys.argv set): this is what `python script.py` runs, without
  paying an interpreter start per row; `test_commands_really_exit_nonzero_in_a_subprocess` runs one row of
  each command as a real subprocess.
- `warning`: the call succeeds and logs `expect`.
- `recovered`: the call succeeds and does what `expect` documents (the row's function asserts it).

`render_errors_markdown()` renders the table as docs/errors.md, the "Errors you may see" page (between
`<!-- errors:start -->` and `<!-- errors:end -->`); `python tests/test_bad_inputs.py` prints it.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import pickle
import runpy
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from tiny import feature_batch, feature_config_kwargs, tiny_bert_config, tiny_wav2vec2_config

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data import MissingModalitySimulator, MMKDDataCollator, load_prepared, make_demo_dataset, save_prepared
from hf_mmkd.data.demo import demo_spec
from hf_mmkd.data.media import encode_wav

START, END = "<!-- errors:start -->", "<!-- errors:end -->"
PREPARE_MMSA = "dataset_scripts/prepare_mmsa.py"
PREPARE_MEDIA = "dataset_scripts/prepare_media.py"
MAKE_DEMO = "dataset_scripts/make_demo.py"
MAKE_RAW_CSV = "dataset_scripts/make_raw_csv.py"
TRAIN = "train.py"
HF_MMKD = "hf-mmkd"  # the console script: hf_mmkd.cli.main
EVALUATE, PREDICT, PUBLISH = "hf-mmkd evaluate", "hf-mmkd predict", "hf-mmkd publish"
# Small, fast train.py runs (they fail before or at the first batch anyway).
TINY_TRAIN = ["--num_train_epochs", "1", "--max_train_samples", "8", "--per_device_train_batch_size", "8",
              "--hidden_size", "8", "--num_attention_heads", "2", "--eval_strategy", "no", "--save_strategy", "no",
              "--report_rates", ""]


@dataclass(frozen=True)
class Row:
    surface: str
    case: str
    outcome: str  # "error" | "exit" | "warning" | "recovered"
    expect: str  # the error/warning text (a fragment that must appear), or the documented recovery
    run: Callable  # error/warning/recovered: f(tmp) runs the case; exit: f(tmp) writes inputs, returns argv
    script: str | None = None  # exit rows: the command, relative to the repository root


# ------------------------------------------------------------------------------------------------ helpers


def feature_model(**overrides):
    return MMKDForSentiment(MMKDConfig(**{**feature_config_kwargs(), **overrides}))


def forward(batch, **overrides):
    return feature_model(**overrides)(**batch)


def with_(batch, **changes):
    return {**batch, **changes}


def nan_at(x, value=float("nan")):
    x = x.clone()
    x[0, 0, 0] = value
    return x


def feature_rows(n=2, **changes):
    """Collator rows for the `feature_config_kwargs()` model (text 7, audio 5, vision 6)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {"id": f"r{i}", "label": 0.5, "has_text": True, "has_audio": True, "has_vision": True}
        for m, d in (("text", 7), ("audio", 5), ("vision", 6)):
            row[f"{m}_features"] = rng.standard_normal((3, d)).astype(np.float32)
        rows.append(row)
    rows[0].update(changes)
    return rows


def feature_collator(**kwargs):
    return MMKDDataCollator(MMKDConfig(**feature_config_kwargs()), return_row_keys=True, **kwargs)


@functools.cache
def tokenizer():
    from transformers import AutoTokenizer

    from hf_mmkd.training import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def text_collator(**kwargs):
    config = MMKDConfig(text_config=tiny_bert_config(), audio_feature_dim=5, hidden_size=16, num_attention_heads=2)
    return MMKDDataCollator(config, tokenizer=tokenizer(), **kwargs)


def text_rows(text, other=True):
    return [{"id": "a", "raw_text": text, "audio_features": np.ones((2, 5), np.float32), "label": 1.0,
             "has_text": True, "has_audio": other, "has_vision": False},
            {"id": "b", "raw_text": "fine", "audio_features": np.ones((2, 5), np.float32), "label": 1.0,
             "has_text": True, "has_audio": True, "has_vision": False}]


def audio_collator():
    config = MMKDConfig(audio_config=tiny_wav2vec2_config(), text_feature_dim=7, hidden_size=16, num_attention_heads=2)
    return MMKDDataCollator(config)


def audio_rows(cell):
    return [{"id": "a", "audio": cell, "text_features": np.ones((2, 7), np.float32), "label": 0.0,
             "has_text": True, "has_audio": True, "has_vision": False}]


def vision_collator():
    from tiny import tiny_vit_config

    return MMKDDataCollator(MMKDConfig(vision_config=tiny_vit_config(), hidden_size=16, num_attention_heads=2))


# ---- the rows' functions: model forward ----------------------------------------------------------------


def zero_length_audio_backbone(tmp):
    config = MMKDConfig(audio_config=tiny_wav2vec2_config(), text_feature_dim=7, hidden_size=16, num_attention_heads=2)
    mask = torch.ones(2, 1024, dtype=torch.long)
    mask[0] = 0  # row 0: zero-length audio
    out = MMKDForSentiment(config)(input_values=torch.randn(2, 1024), audio_attention_mask=mask,
                                   text_features=torch.randn(2, 4, 7), labels=torch.zeros(2))
    assert out.modality_mask[:, 1].tolist() == [False, True] and torch.isfinite(out.loss)


def empty_text_tokens(tmp):
    config = MMKDConfig(text_config=tiny_bert_config(), audio_feature_dim=5, hidden_size=16, num_attention_heads=2)
    attention = torch.ones(2, 6, dtype=torch.long)
    attention[1] = 0  # row 1: no token at all
    out = MMKDForSentiment(config)(input_ids=torch.randint(5, 99, (2, 6)), attention_mask=attention,
                                   audio_features=torch.randn(2, 3, 5))
    assert out.modality_mask[:, 0].tolist() == [True, False]


# ---- collator --------------------------------------------------------------------------------------------


def collate_text(text, other=True):
    return text_collator()(text_rows(text, other))


def empty_text_is_missing(text):
    def run(tmp):
        batch = collate_text(text)
        assert batch["modality_mask"][:, 0].tolist() == [False, True]
        assert batch["attention_mask"][0].sum() == 0
    return run


def overlong_text(caplog):
    def run(tmp):
        with caplog.at_level(logging.WARNING, logger="hf_mmkd"):
            batch = text_collator(max_text_length=8)(text_rows("word " * 40))
        assert batch["input_ids"].shape[1] == 8 and batch["modality_mask"][0, 0]
        return caplog.text
    return run


def overlong_token_ids(caplog):
    def run(tmp):
        config = MMKDConfig(text_config=tiny_bert_config(), hidden_size=16, num_attention_heads=2)
        rows = [{"id": "a", "text_input_ids": list(range(2, 30)), "label": 0.0, "has_text": True}]
        with caplog.at_level(logging.WARNING, logger="hf_mmkd"):
            batch = MMKDDataCollator(config, max_text_length=10)(rows)
        assert batch["input_ids"].shape == (1, 10)
        return caplog.text
    return run


def zero_length_audio_cell(tmp):
    batch = audio_collator()(audio_rows({"bytes": encode_wav(np.zeros(0, np.float32)), "path": "a.wav"}))
    assert batch["modality_mask"][0].tolist() == [True, False, False]


def frames_of_two_sizes(tmp):
    from PIL import Image

    rows = [{"id": "a", "frames": [Image.new("RGB", (12, 12)), Image.new("RGB", (8, 8))], "label": 0.0}]
    vision_collator()(rows)


# ---- dataset_scripts/prepare_mmsa.py -----------------------------------------------------------------------


def mmsa_data(n=(4, 3, 3)):
    """A small MMSA-layout pickle: audio + vision features with lengths, raw text, MOSI-scale labels."""
    rng = np.random.default_rng(0)
    data = {}
    for split, size in zip(("train", "valid", "test"), n):
        data[split] = {
            "id": np.array([f"{split}_{i}" for i in range(size)], dtype=object),
            "raw_text": np.array([f"utterance {i}" for i in range(size)], dtype=object),
            "audio": rng.standard_normal((size, 6, 5)).astype(np.float32), "audio_lengths": np.full(size, 6),
            "vision": rng.standard_normal((size, 6, 4)).astype(np.float32), "vision_lengths": np.full(size, 6),
            "regression_labels": rng.uniform(-3, 3, size).astype(np.float32),
        }
    return data


def inputs(tmp) -> Path:
    folder = tmp / "in"
    folder.mkdir(exist_ok=True)
    return folder


def mmsa(mutate=None, *extra):
    """An `exit` row's function: write the (mutated) pickle, return prepare_mmsa.py's argv."""
    def setup(tmp):
        data = mmsa_data()
        if mutate is not None:
            mutate(data)
        src = inputs(tmp) / "in.pkl"
        src.write_bytes(pickle.dumps(data))
        return [str(src), str(tmp / "out"), *extra]
    return setup


def mmsa_raw(payload: bytes):
    def setup(tmp):
        src = inputs(tmp) / "in.pkl"
        src.write_bytes(payload)
        return [str(src), str(tmp / "out")]
    return setup


def set_item(split, key, value):
    def mutate(data):
        data[split][key] = value(data) if callable(value) else value
    return mutate


def mmsa_non_finite_features_recovered(tmp):
    data = mmsa_data()
    data["train"]["vision"][1, 2, 3] = np.nan
    data["train"]["audio"][0, 0, 0] = -np.inf
    src = inputs(tmp) / "in.pkl"
    src.write_bytes(pickle.dumps(data))
    code, err = run_command(PREPARE_MMSA, [str(src), str(tmp / "out")])
    assert code == 0, err
    card = (tmp / "out" / "README.md").read_text()
    assert "1 audio values of -inf were set to 0" in card and "1 other non-finite values in train/vision" in card
    from hf_mmkd.data import load_prepared

    vision = np.asarray(load_prepared(tmp / "out")["train"][1]["vision_features"])
    assert vision[2, 3] == 0.0 and np.isfinite(vision).all()


def without_any_modality(split, rows):
    """Mutation: the given rows of a split get no modality at all (empty text, length-0 audio and vision)."""
    def mutate(data):
        for i in rows:
            data[split]["raw_text"][i] = ""
            data[split]["audio_lengths"][i] = data[split]["vision_lengths"][i] = 0
    return mutate


def with_classes(data):
    """Mutation: class labels 0, 1, 2, ... instead of regression labels."""
    for arrays in data.values():
        arrays["classification_labels"] = np.arange(len(arrays.pop("regression_labels")), dtype=np.float32)


def both_label_kinds(data):
    for arrays in data.values():
        arrays["classification_labels"] = np.zeros(len(arrays["regression_labels"]), np.float32)


def mmsa_rows_without_modality_recovered(tmp):
    data = mmsa_data()
    without_any_modality("train", [1])(data)
    src = inputs(tmp) / "in.pkl"
    src.write_bytes(pickle.dumps(data))
    code, err = run_command(PREPARE_MMSA, [str(src), str(tmp / "out")])
    assert code == 0, err
    from hf_mmkd.data import load_prepared, load_spec

    assert load_prepared(tmp / "out")["train"]["id"] == ["train_0", "train_2", "train_3"]
    assert load_spec(tmp / "out").splits["train"] == {"rows": 3, "text": 3, "audio": 3, "vision": 3,
                                                      "left_out": ["train_1"]}
    card = (tmp / "out" / "README.md").read_text()
    assert "| train | 3 | 3 | 3 | 3 | 1 |" in card and "- train: `train_1`" in card


class CreatesAFile:
    """Unpickled by plain `pickle`, this object opens (creates) `path`: what a malicious pickle can do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def mmsa_that_runs_code(tmp):
    data = mmsa_data()
    data["train"]["annotations"] = np.array([CreatesAFile(tmp / "pwned")] * 4, dtype=object)
    src = inputs(tmp) / "in.pkl"
    src.write_bytes(pickle.dumps(data))
    return [str(src), str(tmp / "out")]  # the test sees any file created in tmp (tmp/pwned) as a leftover


def mmsa_bytes_text_recovered(tmp):
    data = mmsa_data()
    data["train"]["raw_text"] = np.array([f"café {i}".encode() for i in range(4)], dtype="S")  # `S` dtype
    data["valid"]["raw_text"] = np.array([f"naïve {i}".encode() for i in range(3)], dtype=object)  # bytes objects
    src = inputs(tmp) / "in.pkl"
    src.write_bytes(pickle.dumps(data))
    code, err = run_command(PREPARE_MMSA, [str(src), str(tmp / "out")])
    assert code == 0, err
    loaded = load_prepared(tmp / "out")
    assert loaded["train"]["raw_text"] == [f"café {i}" for i in range(4)]
    assert loaded["validation"]["raw_text"] == [f"naïve {i}" for i in range(3)]


# ---- dataset_scripts/prepare_media.py ------------------------------------------------------------------------


def write_wav(path, seconds=0.3):
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


def write_video_without_decodable_frames(path):
    """A Matroska file whose header declares a video stream, cut before its first frame's data."""
    import av

    full = path.with_name("full.mkv")
    with av.open(str(full), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(full.read_bytes()[:600])
    full.unlink()
    return path


def media(make_media=None, label="0.5", split="train", text="a sentence", columns=None, *extra, start="", end="",
          out=None):
    """An `exit` row's function: write a one-row CSV (+ its media file), return prepare_media.py's argv."""
    def setup(tmp):
        folder = inputs(tmp)
        name = make_media(folder) if make_media is not None else write_wav(folder / "ok.wav").name
        table = folder / "rows.csv"
        with open(table, "w", newline="") as f:
            writer = csv.writer(f)
            header = columns or ["id", "media", "start", "end", "text", "label", "split"]
            writer.writerow(header)
            values = {"id": "u1", "media": name, "start": start, "end": end, "text": text, "label": label,
                      "split": split}
            writer.writerow([values[c] for c in header])
        target = out(folder) if out is not None else tmp / "out"
        return [str(table), str(target), "--max-frames", "2", "--frame-size", "16", *extra]
    return setup


def latin1_csv(tmp):
    folder = inputs(tmp)
    write_wav(folder / "ok.wav")
    (folder / "rows.csv").write_bytes("id,media,start,end,text,label,split\nu1,ok.wav,,,très bien,1,train\n"
                                      .encode("latin-1"))
    return [str(folder / "rows.csv"), str(tmp / "out")]


def image_renamed_mp4(folder):
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "clip.png")
    (folder / "clip.png").rename(folder / "clip.mp4")
    return "clip.mp4"


def bom_csv_recovered(tmp):
    folder = inputs(tmp)
    write_wav(folder / "ok.wav")
    (folder / "rows.csv").write_bytes(b"\xef\xbb\xbf" + b"id,media,start,end,text,label,split\nu1,ok.wav,,,hi,1,train\n")
    code, err = run_command(PREPARE_MEDIA, [str(folder / "rows.csv"), str(tmp / "out"), "--label-range", "-3", "3"])
    assert code == 0, err
    assert load_prepared(tmp / "out")["train"]["id"] == ["u1"]


def csv_text(text):
    def setup(tmp):
        folder = inputs(tmp)
        write_wav(folder / "ok.wav")
        (folder / "rows.csv").write_text(text)
        return [str(folder / "rows.csv"), str(tmp / "out")]
    return setup


def hour_long_wav(folder):
    """A 601 s wav (8 kHz, 8 bit: 4.8 MB), one second over the default clip limit."""
    import soundfile as sf

    sf.write(folder / "long.wav", np.zeros(601 * 8000, np.float32), 8000, subtype="PCM_U8")
    return "long.wav"


def full_folder(folder, name="full", files=("notes.txt",)):
    """A folder holding files that hf_mmkd did not write."""
    target = folder / name
    target.mkdir(exist_ok=True)
    for f in files:
        (target / f).write_text("the user's own file")
    return target


def media_whitespace_text_recovered(tmp):
    argv = media(text="   ")(tmp)
    code, err = run_command(PREPARE_MEDIA, argv)
    assert code == 0, err
    from hf_mmkd.data import load_prepared

    train = load_prepared(tmp / "out")["train"]
    assert train["has_text"] == [False] and train["raw_text"] == [None] and train["has_audio"] == [True]


def media_skip_bad_recovered(tmp):
    folder = inputs(tmp)
    write_wav(folder / "ok.wav")
    (folder / "broken.mp4").write_bytes(b"not a video" * 20)
    table = folder / "rows.csv"
    table.write_text("id,media,start,end,text,label,split\ngood,ok.wav,,,hi,1,train\nbad,broken.mp4,,,x,0,train\n")
    code, err = run_command(PREPARE_MEDIA, [str(table), str(tmp / "out"), "--skip-bad", "--label-range", "-3", "3"])
    assert code == 0, err
    assert "skipped bad: cannot open media file" in err
    assert "skipped bad: cannot open media file" in (tmp / "out" / "README.md").read_text()


# ---- train.py ----------------------------------------------------------------------------------------------


def train(*argv, dataset=None, teacher=None, resume=None, run=None):
    """An `exit` row's function: (optionally) write a dataset, a teacher or a checkpoint, return train.py's argv.
    `run(inputs folder)`: the --output_dir when it must exist before the command (a run to resume); else tmp/out."""
    def setup(tmp):
        extra = [] if run is None else ["--output_dir", str(run(inputs(tmp)))]  # the last --output_dir counts
        if resume is not None:
            extra += ["--resume_from_checkpoint", resume(inputs(tmp))]
        if dataset is not None:
            extra += ["--dataset", dataset(inputs(tmp))]
        if teacher is not None:
            extra += ["--stage", "student", "--teacher_name_or_path", teacher(inputs(tmp))]
        return ["--output_dir", str(tmp / "out"), *TINY_TRAIN, *extra, *argv]
    return setup


def small_demo(folder, name="ds", mutate=None, seed=0):
    dsd = make_demo_dataset(sizes={"train": 8, "validation": 4}, seed=seed)
    if mutate is not None:
        dsd = mutate(dsd)
    save_prepared(dsd, folder / name, "test data", demo_spec(dsd))
    return str(folder / name)


def nan_label(folder):
    """A prepared folder whose train row 2 has a NaN label (written around the converter, which refuses it)."""
    from datasets import Dataset

    dsd = make_demo_dataset(sizes={"train": 8, "validation": 4}, seed=0)
    spec = demo_spec(dsd)  # the spec of the clean data: build_spec itself refuses a NaN label
    columns = dsd["train"].to_dict()
    columns["label"][2] = float("nan")
    dsd["train"] = Dataset.from_dict(columns, features=dsd["train"].features)
    save_prepared(dsd, folder / "ds", "test data", spec)
    return str(folder / "ds")


def long_sequence(split):
    """A demo data set whose first `split` row has an audio sequence longer than hf_mmkd's limit."""
    def make(folder):
        from hf_mmkd.data.prepared import MAX_STEPS

        def mutate(dsd):
            from datasets import Dataset

            columns = dsd[split].to_dict()
            columns["audio_features"][0] = np.zeros((MAX_STEPS + 1, 8), np.float32).tolist()
            dsd[split] = Dataset.from_dict(columns, features=dsd[split].features)
            return dsd
        dsd = make_demo_dataset(sizes={"train": 8, "validation": 4, "test": 4}, seed=0)
        dsd = mutate(dsd)
        save_prepared(dsd, folder / "ds", "test data", demo_spec(dsd))
        return str(folder / "ds")
    return make


def spec_edit(**changes):
    """A prepared demo folder whose dataset_spec.json is edited after it was written (`changes(spec) -> None`)."""
    def make(folder):
        path = small_demo(folder)
        spec_path = Path(path) / "dataset_spec.json"
        spec = json.loads(spec_path.read_text())
        for key, edit in changes.items():
            spec[key] = edit(spec[key])
        spec_path.write_text(json.dumps(spec))
        return path
    return make


def with_ids(split, ids):
    def mutate(dsd):
        from datasets import Dataset

        columns = dsd[split].to_dict()
        columns["id"][: len(ids)] = ids
        dsd[split] = Dataset.from_dict(columns, features=dsd[split].features)
        return dsd
    return mutate


def empty_split(folder):
    """A prepared demo folder whose validation parquet holds no row."""
    import pyarrow.parquet as pq

    path = small_demo(folder)
    shard = Path(path) / "data" / "validation-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 0), shard)
    return path


def local_demo_folder_wins(tmp):
    from hf_mmkd.data import load_dataset_and_spec

    small_demo(tmp, name="demo")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        splits, _ = load_dataset_and_spec("demo")
    finally:
        os.chdir(cwd)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "validation": 4}  # not the built-in 600/150/300


def card_edit(old, new):
    """A prepared folder whose README card has `old` replaced by `new` (invalid YAML, an entry without path)."""
    def make(folder):
        path = demo_with_test_split(folder)
        readme = Path(path) / "README.md"
        readme.write_text(readme.read_text().replace(old, new, 1))
        return path
    return make


@functools.cache
def _trained_teacher() -> Path:
    """A teacher trained by train.py (so with its provenance record) on the 8-row demo set used by the train rows."""
    import tempfile

    from hf_mmkd.training import main

    root = Path(tempfile.mkdtemp(prefix="hf_mmkd_bad_inputs_teacher_"))
    data = small_demo(root)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["--output_dir", str(root / "run"), *TINY_TRAIN, "--stage", "teacher", "--dataset", data]) == 0
    return root / "run" / "teacher"


def trained_teacher(edit=None):
    """A copy of `_trained_teacher()`, edited by `edit(folder)`; used with `--dataset small_demo`."""
    def make(folder):
        target = folder / "teacher"
        shutil.copytree(_trained_teacher(), target)
        if edit is not None:
            edit(target)
        return str(target)
    return make


def set_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


def truncate(name="model.safetensors"):
    def edit(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return edit


def demo_without_spec(folder):
    """A prepared folder as written before data-set specs existed (no dataset_spec.json)."""
    path = small_demo(folder)
    (Path(path) / "dataset_spec.json").unlink()
    return path


def demo_with_bad_spec(folder):
    import json

    path = small_demo(folder)
    spec = json.loads((Path(path) / "dataset_spec.json").read_text())
    (Path(path) / "dataset_spec.json").write_text(json.dumps({**spec, "task": "regresion"}))
    return path


def kept_rows_without_modality_warning(caplog):
    def run(tmp):
        from hf_mmkd.data.spec import build_spec
        from hf_mmkd.training import main

        dsd = make_demo_dataset(sizes={"train": 8, "validation": 4}, seed=0)
        dsd["train"] = dsd["train"].map(lambda row, i: {f"has_{m}": i > 0 for m in ("text", "audio", "vision")},
                                        with_indices=True)  # demo_train_0 has nothing, kept as if --keep-...
        save_prepared(dsd, tmp / "ds", "test data", build_spec(dsd, name="kept", source="tests", label_range=(-3, 3)))
        with caplog.at_level(logging.WARNING, logger="hf_mmkd"):
            assert main(["--output_dir", str(tmp / "out"), "--dataset", str(tmp / "ds"), *TINY_TRAIN]) == 0
        return caplog.text
    return run


def one_step_warning(caplog):
    """train.py on 8 demo rows for one optimiser step: the validation predictions are still (nearly) constant."""
    def run(tmp):
        from hf_mmkd.training import main

        with caplog.at_level(logging.WARNING, logger="hf_mmkd"):
            assert main(["--output_dir", str(tmp / "out"), *TINY_TRAIN, "--max_steps", "1"]) == 0
        return caplog.text
    return run


def corrupt_parquet(folder):
    path = small_demo(folder)
    shard = next((Path(path) / "data").glob("train-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    return path


def no_validation_split(folder):
    return small_demo(folder, mutate=lambda d: d.__class__({"train": d["train"]}))


def nan_features(folder):
    def mutate(dsd):
        from datasets import Dataset

        columns = dsd["train"].to_dict()
        columns["audio_features"][3][0][0] = float("nan")
        dsd["train"] = Dataset.from_dict(columns, features=dsd["train"].features)
        return dsd
    return small_demo(folder, mutate=mutate)


def nan_test_features(folder):
    """A demo data set with a test split whose row 'demo_test_1' has a NaN in its audio features."""
    from datasets import Dataset

    path = demo_with_test_split(folder)
    dsd = load_prepared(path)
    columns = dsd["test"].to_dict()
    columns["audio_features"][1][0][0] = float("nan")
    dsd["test"] = Dataset.from_dict(columns, features=dsd["test"].features)
    save_prepared(dsd, folder / "nan_ds", "test data", demo_spec(dsd))
    return str(folder / "nan_ds")


def class_label_out_of_range(folder):
    """A two-class data set (negative / positive) whose train row 'demo_train_2' has the class id 5 (written around
    the converter, which refuses it)."""
    from datasets import Dataset, Value

    from hf_mmkd.data.spec import build_spec

    dsd = make_demo_dataset(sizes={"train": 8, "validation": 4}, seed=0)
    for name in list(dsd):
        columns = dsd[name].to_dict()
        columns["classification_label"] = [int(y > 0) for y in columns.pop("label")]
        features = dsd[name].features.copy()
        del features["label"]
        features["classification_label"] = Value("int64")
        dsd[name] = Dataset.from_dict(columns, features=features)
    spec = build_spec(dsd, name="two classes", source="tests", task="classification",
                      class_names=["negative", "positive"])
    columns = dsd["train"].to_dict()
    columns["classification_label"][2] = 5
    dsd["train"] = Dataset.from_dict(columns, features=dsd["train"].features)
    save_prepared(dsd, folder / "ds", "test data", spec)
    return str(folder / "ds")


def float_wav_with_nan():
    """A 16 kHz float WAV whose samples include a NaN (16-bit PCM, what the converters write, cannot hold one)."""
    import soundfile

    wave = np.zeros(1600, np.float32)
    wave[5] = np.nan
    buf = io.BytesIO()
    soundfile.write(buf, wave, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@functools.cache
def _checkpoint(kind: str = "features") -> Path:
    """An (untrained) checkpoint folder as train.py saves it: weights, config, code, processor; made once.

    "features": demo-width feature inputs (text 16, audio 8, vision 8); "backbones": tiny BERT + wav2vec2 + ViT.
    """
    import tempfile

    from transformers import Wav2Vec2FeatureExtractor

    from hf_mmkd.inference import build_processor

    folder = Path(tempfile.mkdtemp(prefix="hf_mmkd_bad_inputs_")) / kind
    torch.manual_seed(0)
    if kind == "features":
        config = MMKDConfig(text_feature_dim=16, audio_feature_dim=8, vision_feature_dim=8, hidden_size=8,
                            num_attention_heads=2)
        processor = build_processor(config)
    else:
        from test_processing import tiny_image_processor, tiny_tokenizer
        from tiny import backbone_config_kwargs

        config = MMKDConfig(**backbone_config_kwargs())
        processor = build_processor(config, tokenizer=tiny_tokenizer(), feature_extractor=Wav2Vec2FeatureExtractor(),
                                    image_processor=tiny_image_processor(), max_frames=3)
    MMKDForSentiment(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def checkpoint_without(filename, kind="features", name="teacher"):
    def make(folder):
        target = folder / name
        shutil.copytree(_checkpoint(kind), target)
        (target / filename).unlink()
        return str(target)
    return make


def edited_checkpoint(edit, kind="features", name="ckpt"):
    """A copy of `_checkpoint(kind)` changed by `edit(folder)` (a truncated weight file, a config that does not
    match the weights, ...)."""
    def make(folder):
        target = folder / name
        shutil.copytree(_checkpoint(kind), target)
        edit(target)
        return str(target)
    return make


def config_json(text):
    """An edit of a checkpoint: its config.json replaced by `text`."""
    def edit(folder):
        (folder / "config.json").write_text(text)
    return edit


def nan_weights(folder):
    """An edit of a checkpoint: every weight NaN (as a diverged run saves them)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              folder / "model.safetensors", metadata={"format": "pt"})


def code_outside_the_folder(folder):
    """An edit of a checkpoint: auto_map names a copy of the model code in a sibling folder."""
    (folder.parent / "elsewhere").mkdir()
    shutil.copy(folder / "modeling_mmkd.py", folder.parent / "elsewhere" / "modeling_mmkd.py")
    set_config(auto_map={"AutoConfig": "configuration_mmkd.MMKDConfig",
                         "AutoModelForSequenceClassification": "../elsewhere/modeling_mmkd.MMKDForSentiment"})(folder)


# ---- hf-mmkd evaluate / predict / publish -------------------------------------------------------------------


def hf_mmkd(command, *argv, checkpoint=None, dataset=None, files=None):
    """An `exit` row's function: prepare a checkpoint / dataset / files, return the `hf-mmkd` argv."""
    def setup(tmp):
        folder = inputs(tmp)
        args = [command]
        if checkpoint is not None:
            args.append(checkpoint(folder))
        if dataset is not None:
            args += ["--dataset", dataset(folder)]
        if files is not None:
            files(folder)
        return args + [a.replace("{in}", str(folder)).replace("{out}", str(tmp / "out")) for a in argv]
    return setup


def whole_checkpoint(kind="features"):
    def make(folder):
        return str(_checkpoint(kind))
    return make


def demo_with_test_split(folder, broken_split=None):
    dsd = make_demo_dataset(sizes={"train": 8, "validation": 4, "test": 4}, seed=0)
    save_prepared(dsd, folder / "ds", "test data", demo_spec(dsd))
    if broken_split is not None:
        shard = next((folder / "ds" / "data").glob(f"{broken_split}-*.parquet"))
        shard.write_bytes(shard.read_bytes()[:100])
    return str(folder / "ds")


def checkpoint_of_other_labels(folder):
    """The features checkpoint, its config declaring labels on [0, 10] (the demo's are on [-3, 3])."""
    import json

    target = folder / "other_labels"
    shutil.copytree(_checkpoint(), target)
    dsd = make_demo_dataset(sizes={"train": 8, "validation": 4}, seed=0)
    spec = {**demo_spec(dsd).to_dict(), "name": "ratings", "label_range": [0, 10], "neutral_band": [4, 6]}
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "dataset_spec": spec}))
    return str(target)


def resumed_run(folder):
    """The --output_dir of a run being resumed, as a killed run leaves it: its manifest lists teacher_run/ and
    student_run/, where its checkpoints are."""
    run = folder / "run"
    run.mkdir(exist_ok=True)
    entries = {"teacher_run": "train.py", "student_run": "train.py"}
    (run / ".hf_mmkd_outputs.json").write_text(json.dumps({"version": 1, "entries": entries}))
    return run


def incomplete_checkpoint(folder):
    ckpt = resumed_run(folder) / "teacher_run" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"cut")
    return str(ckpt)


def truncated_resume_checkpoint(folder):
    """A checkpoint whose save finished (trainer_state.json) but whose weight file was cut afterwards."""
    ckpt = resumed_run(folder) / "teacher_run" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    shutil.copy(_checkpoint() / "model.safetensors", ckpt / "model.safetensors")
    truncate()(ckpt)
    return str(ckpt)


def checkpoint_of_other_sizes(folder):
    """A complete Trainer checkpoint of a (student-only) run with hidden_size 8, as a kill right after it leaves the
    run: its final student/ and results.json are removed."""
    from hf_mmkd.training import main

    run = resumed_run(folder)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["--output_dir", str(run), *TINY_TRAIN, "--stage", "student", "--method", "none",
                     "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1"]) == 0
    shutil.rmtree(run / "student")
    (run / "results.json").unlink()
    return str(run / "student_run" / "checkpoint-1")


def checkpoint_of(run, stage_run, config=None):
    """A complete-looking checkpoint-2 in `<run>/<stage_run>` (trainer_state.json; with `config`, the config.json of
    the model it holds)."""
    def make(folder):
        ckpt = folder / run / stage_run / "checkpoint-2"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
        if config is not None:
            (ckpt / "student").mkdir()
            (ckpt / "student" / "config.json").write_text(json.dumps(config))
        return str(ckpt)
    return make


def config_file(payload: bytes, name="c.yaml"):
    def setup(tmp):
        path = inputs(tmp) / name
        path.write_bytes(payload)
        return ["--output_dir", str(tmp / "out"), *TINY_TRAIN, "--config", str(path)]
    return setup


def make_demo(out):
    """An `exit` row's function for make_demo.py: `out(inputs folder)` is OUT_DIR."""
    def setup(tmp):
        return [str(out(inputs(tmp)))]
    return setup


def earlier_predictions(folder):
    """preds.json as an earlier `hf-mmkd predict` left it: listed in the manifest of its folder."""
    (folder / "preds.json").write_text("[]\n")
    (folder / ".hf_mmkd_outputs.json").write_text(json.dumps({"version": 1, "entries": {"preds.json": "hf-mmkd predict"}}))


def run_folder(folder):
    """A train.py output folder as a finished run leaves it (student/ is the checkpoint to publish)."""
    run = folder / "run"
    for name in ("teacher_run", "student_run"):
        (run / name).mkdir(parents=True)
    shutil.copytree(_checkpoint(), run / "teacher")
    shutil.copytree(_checkpoint(), run / "student")
    (run / "results.json").write_text("{}")
    return str(run / "student")


# ---- the table ---------------------------------------------------------------------------------------------


def rows(caplog=None) -> list[Row]:
    fb = feature_batch  # (4 rows, 6 steps, dims 7/5/6, labels in [-3, 3])
    return [
        # model forward
        Row("model forward", "every modality of a row missing (modality_mask all False)", "error",
            "have no modality present", lambda t: forward(fb(modality_mask=[[0, 0, 0]] + [[1, 1, 1]] * 3))),
        Row("model forward", "every modality of a row has length 0", "error", "have no modality present",
            lambda t: forward(with_(fb(), **{f"{m}_lengths": torch.tensor([0, 2, 3, 4])
                                             for m in ("text", "audio", "vision")}))),
        Row("model forward", "no inputs at all", "error", "no inputs given", lambda t: feature_model()()),
        Row("model forward", "NaN in a feature sequence", "error", "text_features contains NaN or inf values",
            lambda t: forward(with_(fb(), text_features=nan_at(fb()["text_features"])))),
        Row("model forward", "inf in a feature sequence", "error", "audio_features contains NaN or inf values",
            lambda t: forward(with_(fb(), audio_features=nan_at(fb()["audio_features"], float("inf"))))),
        Row("model forward", "wrong feature width", "error", "vision_features must be (batch, steps, 6)",
            lambda t: forward(fb(dims=(7, 5, 9)))),
        Row("model forward", "feature lengths longer than the sequence", "error", "text_lengths must lie in [0, 6]",
            lambda t: forward(with_(fb(), text_lengths=torch.tensor([9, 1, 1, 1])))),
        Row("model forward", "inputs of different batch sizes", "error", "inputs disagree on the batch size",
            lambda t: forward(with_(fb(), audio_features=torch.randn(3, 6, 5), audio_lengths=None))),
        Row("model forward", "modality_mask of the wrong shape", "error", "modality_mask must have shape (4, 3)",
            lambda t: forward(with_(fb(), modality_mask=torch.ones(4, 2, dtype=torch.bool)))),
        Row("model forward", "features given to a model with a text backbone", "error",
            "but this model takes text as backbone",
            lambda t: MMKDForSentiment(MMKDConfig(text_config=tiny_bert_config(), audio_feature_dim=5, hidden_size=16,
                                                  num_attention_heads=2))(**fb(dims=(7, 5, 6)))),
        Row("model forward", "classification label outside [0, num_labels)", "error",
            "classification labels must lie in [0, 2]",
            lambda t: forward(with_(fb(), labels=torch.tensor([0, 1, 2, 3])), task="classification", num_labels=3)),
        Row("model forward", "NaN regression label", "error", "labels contain NaN or inf values",
            lambda t: forward(with_(fb(), labels=torch.tensor([0.0, float("nan"), 1.0, 2.0])))),
        Row("model forward", "zero-length audio (audio_attention_mask all 0)", "recovered",
            "the row's audio counts as missing (modality_mask False; the learned missing embedding stands in)",
            zero_length_audio_backbone),
        Row("model forward", "empty text (attention_mask all 0)", "recovered",
            "the row's text counts as missing (modality_mask False)", empty_text_tokens),
        # collator
        Row("collator", "empty list of rows", "error", "cannot collate an empty list of rows",
            lambda t: feature_collator()([])),
        Row("collator", "wrong feature width", "error", "row 'r0': audio_features has shape (3, 9), but the model "
            "expects (steps, 5)", lambda t: feature_collator()(feature_rows(audio_features=np.ones((3, 9))))),
        Row("collator", "NaN or inf in a feature sequence", "error", "row 'r0': vision_features contains NaN or inf",
            lambda t: feature_collator()(feature_rows(vision_features=np.full((3, 6), np.inf)))),
        Row("collator", "a row with none of the model's modalities", "error",
            "row(s) ['r0'] have none of the model's modalities (text, audio, vision)",
            lambda t: feature_collator()(feature_rows(has_text=False, has_audio=False, has_vision=False))),
        Row("collator", "a row without its label", "error", "rows ['r0'] have no 'label'",
            lambda t: feature_collator()(feature_rows(label=None))),
        Row("collator", "return_row_keys without an id column", "error", "return_row_keys needs an 'id' column",
            lambda t: feature_collator()(feature_rows(id=None))),
        Row("collator", "text backbone without a tokenizer or token ids", "error",
            "the model has a text backbone: the rows need 'raw_text' and the collator a tokenizer",
            lambda t: MMKDDataCollator(MMKDConfig(text_config=tiny_bert_config()))([{"id": "a", "label": 0.0}])),
        Row("collator", "empty text", "recovered", "the row's text counts as missing (modality_mask False)",
            empty_text_is_missing("")),
        Row("collator", "whitespace-only text", "recovered", "the row's text counts as missing (modality_mask False)",
            empty_text_is_missing(" \t\n ")),
        Row("collator", "text longer than max_text_length", "warning", "truncated to max_text_length=8",
            overlong_text(caplog)),
        Row("collator", "token ids longer than max_text_length", "warning", "truncated to max_text_length=10",
            overlong_token_ids(caplog)),
        Row("collator", "zero-length audio", "recovered", "the row's audio counts as missing (modality_mask False)",
            zero_length_audio_cell),
        Row("collator", "NaN in a float WAV audio cell", "error", "row 'a': audio contains NaN or inf samples",
            lambda t: audio_collator()(audio_rows({"bytes": float_wav_with_nan(), "path": "a.wav"}))),
        Row("collator", "corrupt audio bytes", "error", "audio cell 'a.wav' is not readable audio (corrupt or truncated)",
            lambda t: audio_collator()(audio_rows({"bytes": b"RIFF" + b"\x00" * 40, "path": "a.wav"}))),
        Row("collator", "frames of different sizes without an image processor", "error",
            "frames differ in size; pass an image_processor", frames_of_two_sizes),
        # missing-modality simulator
        Row("simulator", "unknown protocol", "error", "unknown protocol 'p9'",
            lambda t: MissingModalitySimulator("p9")),
        Row("simulator", "rate outside [0, 1]", "error", "rate must lie in [0, 1], got 1.5",
            lambda t: MissingModalitySimulator("p1", rate=1.5)),
        Row("simulator", "evaluation draws without row keys", "error", "build the collator with return_row_keys=True",
            lambda t: MissingModalitySimulator("p2", rate=0.5)(fb())),
        Row("simulator", "availability set that empties a row", "error", "leaves row(s) [0] with no modality",
            lambda t: MissingModalitySimulator("p3", availability="v")(fb(modality_mask=[[1, 1, 0]] + [[1, 1, 1]] * 3))),
        # prepare_mmsa.py
        Row(PREPARE_MMSA, "input pickle not found", "exit", "input pickle … not found", lambda t: [str(t / "in.pkl"), str(t / "out")],
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "truncated pickle", "exit", "cannot read … as a pickle: pickle data was truncated", mmsa_raw(pickle.dumps(mmsa_data())[:500]),
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "not a pickle at all", "exit", "cannot read … as a pickle", mmsa_raw(b"PK\x03\x04 a zip file?"),
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "a pickle that would run code when read (creates a file)", "exit",
            "refused to load …in.pkl: it asks for io.open, which an MMSA pickle never holds", mmsa_that_runs_code,
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "raw_text as bytes (object or S dtype)", "recovered", "decoded as UTF-8 text",
            mmsa_bytes_text_recovered),
        Row(PREPARE_MMSA, "raw_text bytes that are not UTF-8", "exit",
            "key 'raw_text': row 1 (id 'train_1') is bytes that are not UTF-8 text",
            mmsa(set_item("train", "raw_text", np.array([b"ok", b"caf\xe9", b"a", b"b"], dtype=object))),
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "a label of 1e30", "exit",
            "id 'train_2': label 1e+30 is not finite or beyond +-1e+06",
            mmsa(lambda d: d["train"]["regression_labels"].__setitem__(2, 1e30)), PREPARE_MMSA),
        Row(PREPARE_MMSA, "a pickle that is not a dict of splits", "exit", "MMSA pickle must hold a dict of splits, got list",
            mmsa_raw(pickle.dumps([1, 2])), PREPARE_MMSA),
        Row(PREPARE_MMSA, "unknown split", "exit", "unknown split key(s) ['dev2']",
            mmsa(lambda d: d.__setitem__("dev2", d["test"])), PREPARE_MMSA),
        Row(PREPARE_MMSA, "unknown key", "exit", "split 'train': unknown key(s) ['speaker']",
            mmsa(set_item("train", "speaker", np.zeros(4))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "arrays of one split disagree on the row count", "exit",
            "key 'vision': has 2 rows but regression_labels has 3 (length mismatch between arrays)",
            mmsa(set_item("valid", "vision", np.zeros((2, 6, 4), np.float32))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "lengths given without their modality", "exit", "key 'vision_lengths': given without 'vision'",
            mmsa(lambda d: d["test"].pop("vision")), PREPARE_MMSA),
        Row(PREPARE_MMSA, "feature width differs between splits", "exit",
            "split 'test', key 'audio': has feature width 6 but another split has 5",
            mmsa(set_item("test", "audio", np.zeros((3, 6, 6), np.float32))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "features not (N, steps, dim)", "exit", "key 'audio': must be (N, steps, dim), got shape (4, 6)",
            mmsa(set_item("train", "audio", np.zeros((4, 6), np.float32))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "a length longer than its sequence", "exit", "row 2 has length 9 outside [0, 6]",
            mmsa(lambda d: d["train"]["audio_lengths"].__setitem__(2, 9)), PREPARE_MMSA),
        Row(PREPARE_MMSA, "no labels in a split", "exit", "key 'regression_labels': missing",
            mmsa(lambda d: d["valid"].pop("regression_labels")), PREPARE_MMSA),
        Row(PREPARE_MMSA, "duplicate ids", "exit", "id 'train_0' occurs more than once",
            mmsa(lambda d: d["train"]["id"].__setitem__(1, "train_0")), PREPARE_MMSA),
        Row(PREPARE_MMSA, "NaN label", "exit", "row 1 (id 'train_1'): label nan is not finite",
            mmsa(lambda d: d["train"]["regression_labels"].__setitem__(1, np.nan)), PREPARE_MMSA),
        Row(PREPARE_MMSA, "regression label outside --label-range (MOSI: -3 3)", "exit",
            "row 2 (id 'test_2'): label 4.5 lies outside the label range [-3, 3]",
            mmsa(lambda d: d["test"]["regression_labels"].__setitem__(2, 4.5), "--label-range", "-3", "3"),
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "negative or fractional class label", "exit", "is not a class index (a whole number >= 0)",
            mmsa(set_item("train", "classification_labels", np.array([0, 1, -1, 2])), "--task", "regression"),
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "regression and class labels, no --task", "exit",
            "holds both 'regression_labels' and 'classification_labels': choose … with --task regression or --task "
            "classification", mmsa(both_label_kinds), PREPARE_MMSA),
        Row(PREPARE_MMSA, "fewer --class-names than classes", "exit",
            "split 'train', id 'train_2': label 2 is not a class id in [0, 1] (2 class names)",
            mmsa(with_classes, "--class-names", "negative", "positive"), PREPARE_MMSA),
        Row(PREPARE_MMSA, "--neutral-band outside the label range", "exit",
            "key 'neutral_band': expected low <= a <= b <= high inside the label range [-3.0, 3.0], got [2.0, 4.0]",
            mmsa(None, "--label-range", "-3", "3", "--neutral-band", "2", "4"), PREPARE_MMSA),
        Row(PREPARE_MMSA, "no row of a split has any modality", "exit",
            "split 'test': none of its 3 rows has any modality (ids ['test_0', 'test_1', 'test_2'])",
            mmsa(without_any_modality("test", [0, 1, 2])), PREPARE_MMSA),
        Row(PREPARE_MMSA, "rows with no modality at all", "recovered",
            "left out; their number per split is printed and put in the card, their ids in dataset_spec.json "
            "(--keep-rows-without-modality keeps them)", mmsa_rows_without_modality_recovered),
        Row(PREPARE_MMSA, "OUT_DIR not empty", "exit", "is not empty; pass --overwrite",
            lambda t: mmsa()(t)[:1] + [str(full_folder(inputs(t)))], PREPARE_MMSA),
        Row(PREPARE_MMSA, "--overwrite of a folder holding files hf_mmkd did not write", "exit",
            "holds notes.txt, which hf_mmkd did not write (not in its .hf_mmkd_outputs.json); --overwrite replaces "
            "only what hf_mmkd wrote", lambda t: mmsa()(t)[:1] + [str(full_folder(inputs(t))), "--overwrite"],
            PREPARE_MMSA),
        Row(PREPARE_MMSA, "OUT_DIR is a symbolic link (--overwrite)", "exit",
            "output folder …link is a symbolic link; prepare_mmsa.py never replaces it",
            lambda t: mmsa(None, "--overwrite")(t)[:1] + [str((inputs(t) / "link").symlink_to(inputs(t)) or
                                                          inputs(t) / "link"), "--overwrite"], PREPARE_MMSA),
        Row(PREPARE_MMSA, "OUT_DIR is the folder of the input pickle (--overwrite)", "exit",
            "output folder … contains the input …in.pkl: prepare_mmsa.py never writes where its inputs are",
            lambda t: mmsa()(t)[:1] + [str(inputs(t)), "--overwrite"], PREPARE_MMSA),
        Row(PREPARE_MMSA, "both 'valid' and 'dev' split keys", "exit",
            "split keys ['valid', 'dev'] all mean the 'validation' split",
            mmsa(lambda d: d.__setitem__("dev", d["valid"])), PREPARE_MMSA),
        Row(PREPARE_MMSA, "labels given as strings", "exit",
            "split 'train', key 'regression_labels': must hold numbers, got <U3 values (e.g. '0.5')",
            mmsa(set_item("train", "regression_labels", np.array(["0.5", "1.0", "2.0", "0.0"]))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "features given as strings", "exit", "split 'test', key 'vision': must hold numbers",
            mmsa(set_item("test", "vision", lambda d: d["test"]["vision"].astype(str))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "2-D lengths", "exit",
            "key 'audio_lengths': must be a 1-D array of one length per row, got shape (4, 2)",
            mmsa(set_item("train", "audio_lengths", np.full((4, 2), 6))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "fractional lengths", "exit",
            "key 'vision_lengths': row 1 has length 2.5, which is not a whole number of steps",
            mmsa(set_item("valid", "vision_lengths", np.array([6, 2.5, 6]))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "a split with 0 rows", "exit",
            "split 'test', key 'regression_labels': has 0 rows; every split needs at least one row",
            mmsa(lambda d: d.__setitem__("test", {k: v[:0] for k, v in d["test"].items()})), PREPARE_MMSA),
        Row(PREPARE_MMSA, "feature sequences too long for memory", "exit",
            "split 'train', key 'audio' has 10001 steps per row; hf_mmkd accepts at most 10000 (self-attention over "
            "one such row needs about 0.4 GB per head and layer)",
            mmsa(set_item("train", "audio", np.zeros((4, 10001, 5), np.float32))), PREPARE_MMSA),
        Row(PREPARE_MMSA, "reversed --label-range", "exit",
            "--label-range 3 -3: expected two finite numbers LOW HIGH with LOW below HIGH",
            mmsa(None, "--label-range", "3", "-3"), PREPARE_MMSA),
        Row(PREPARE_MMSA, "NaN in --label-range", "exit",
            "--label-range nan 3: expected two finite numbers LOW HIGH with LOW below HIGH",
            mmsa(None, "--label-range", "nan", "3"), PREPARE_MMSA),
        Row(PREPARE_MMSA, "NaN/inf features", "recovered",
            "set to 0 (audio -inf as MMSA's loader does) and counted in the dataset card",
            mmsa_non_finite_features_recovered),
        # prepare_media.py
        Row(PREPARE_MEDIA, "CSV not found", "exit", "CSV file … not found", lambda t: [str(t / "rows.csv"), str(t / "out")],
            PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "CSV without a required column", "exit", "missing column(s) ['label']",
            media(columns=["id", "media", "text", "split"]), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "a label that is not a number", "exit", "line 2 (id 'u1'): could not convert string to float",
            media(label="positive"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "NaN label", "exit", "line 2 (id 'u1'): label nan is not a finite number",
            media(label="nan"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "label outside --label-range", "exit", "label 7 lies outside the label range [-3, 3]",
            media(None, "7", "train", "hi", None, "--label-range", "-3", "3"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "class label that is neither a class name nor an id", "exit",
            "line 2 (id 'u1'): label 'meh' is neither a class name (negative, positive) nor a class id",
            media(None, "meh", "train", "hi", None, "--task", "classification", "--class-names", "negative",
                  "positive"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "unknown split", "exit", "split 'training' is not train/validation/test",
            media(split="training"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "media file missing", "exit", "row 'u1': media file not found",
            media(lambda f: "gone.wav"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "corrupt media file", "exit", "row 'u1': cannot open media file",
            media(lambda f: (f / "bad.mp4").write_bytes(b"not a video" * 20) and "bad.mp4"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "zero-length audio", "exit", "the audio stream has no samples (zero-length audio)",
            media(lambda f: write_wav(f / "empty.wav", seconds=0).name), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "video with no decodable frame", "exit", "no decodable video frame",
            media(lambda f: write_video_without_decodable_frames(f / "cut.mkv").name), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "--fps 0", "exit", "--fps must be a positive number of frames per second, got 0",
            media(None, "0.5", "train", "hi", None, "--fps", "0"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "negative --fps", "exit", "--fps must be a positive number of frames per second, got -2",
            media(None, "0.5", "train", "hi", None, "--fps", "-2"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "segment start after its end", "exit", "line 2 (id 'u1'): end 0.1 s is not after start 0.2 s",
            media(start="0.2", end="0.1"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "negative segment start", "exit", "line 2 (id 'u1'): start -1 s is negative",
            media(start="-1"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "an image file renamed .mp4", "exit",
            "row 'u1': …clip.mp4 is a still image (png_pipe), not an audio or video file",
            media(image_renamed_mp4), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "CSV that is not UTF-8", "exit", "rows.csv is not UTF-8 text", latin1_csv, PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "UTF-8 CSV with a byte-order mark (Excel)", "recovered", "read as usual (the mark is "
            "not part of the first column's name)", bom_csv_recovered),
        Row(PREPARE_MEDIA, "CSV with a header and no rows", "exit", "rows.csv has a header but no rows",
            csv_text("id,media,start,end,text,label,split\n"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "no row in the train split", "exit", "no row has split 'train' (splits given: test)",
            media(split="test"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "a quote that is never closed", "exit", "rows.csv, line 2: unexpected end of data",
            csv_text('id,media,start,end,text,label,split\nu1,ok.wav,,,"hi,1,train\nu2,ok.wav,,,x,1,train\n'),
            PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "a folder given as the media file", "exit", "row 'u1': …clip is a folder, not a media file",
            media(lambda f: (f / "clip").mkdir() or "clip"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "clip longer than --max-clip-seconds (default 600 s)", "exit",
            "ok.wav: the clip is 0.3 s long, more than the 0.2 s that hf_mmkd decodes per clip",
            media(None, "0.5", "train", "hi", None, "--max-clip-seconds", "0.2"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "--max-clip-seconds 0", "exit", "--max-clip-seconds must be a positive, finite number",
            media(None, "0.5", "train", "hi", None, "--max-clip-seconds", "0"), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "OUT_DIR is the folder of the media (--overwrite)", "exit", "contains the input",
            media(None, "0.5", "train", "hi", None, "--overwrite", out=lambda f: f), PREPARE_MEDIA),
        Row(PREPARE_MEDIA, "empty or whitespace-only transcript", "recovered",
            "stored with has_text False (raw_text null)", media_whitespace_text_recovered),
        Row(PREPARE_MEDIA, "missing/corrupt media with --skip-bad", "recovered",
            "the row is skipped, listed on stderr and in the dataset card", media_skip_bad_recovered),
        # make_raw_csv.py
        Row(MAKE_RAW_CSV, "MOSI label file not found", "exit", "…label.csv: No such file or directory",
            lambda t: (inputs(t) / "mosi_v1_1.wav").write_bytes(b"x") and [str(inputs(t)), str(t / "out.csv"),
                                                                            "--mosi-labels", str(t / "label.csv")],
            MAKE_RAW_CSV),
        Row(MAKE_RAW_CSV, "OUT.csv exists and was not written by hf_mmkd (--overwrite)", "exit",
            "OUT.csv …out.csv exists and was not written by hf_mmkd",
            lambda t: (inputs(t) / "out.csv").write_text("mine\n") and (inputs(t) / "raw").mkdir() is None
            and [str(inputs(t) / "raw"), str(inputs(t) / "out.csv"), "--overwrite"], MAKE_RAW_CSV),
        Row(MAKE_RAW_CSV, "OUT.csv inside RAW_DIR", "exit", "lies inside the input",
            lambda t: [str(inputs(t)), str(inputs(t) / "out.csv")], MAKE_RAW_CSV),
        # make_demo.py
        Row(MAKE_DEMO, "OUT_DIR is a file", "exit", "output folder … exists and is not a folder",
            make_demo(lambda f: (f / "afile").write_text("x") and f / "afile"), MAKE_DEMO),
        Row(MAKE_DEMO, "--overwrite of a folder holding files hf_mmkd did not write", "exit",
            "which hf_mmkd did not write",
            lambda t: make_demo(full_folder)(t) + ["--overwrite"], MAKE_DEMO),
        # train.py
        Row(TRAIN, "unknown flag", "exit", "arguments are not used by the HfArgumentParser: ['--bogus_flag'", train("--bogus_flag", "1"), TRAIN),
        Row(TRAIN, "unknown stage", "exit", "stage must be teacher, student or both", train("--stage", "teachers"), TRAIN),
        Row(TRAIN, "unknown method", "exit", "unknown distillation method 'distill'", train("--method", "distill"), TRAIN),
        Row(TRAIN, "--config file not found", "exit", "config file not found: nope.yaml", train("--config", "nope.yaml"),
            TRAIN),
        Row(TRAIN, "dataset folder not found", "exit",
            "is not a folder (and does not look like a Hub dataset id 'owner/name')",
            train(dataset=lambda f: str(f / "nowhere")), TRAIN),
        Row(TRAIN, "dataset folder not prepared yet (dataset: data_prepared/mosi)", "exit",
            "the folder …data_prepared_nowhere/mosi does not exist and 'data_prepared_nowhere/mosi' cannot be read as a "
            "Hub data set (…); prepare it first: python dataset_scripts/prepare_mmsa.py IN.pkl",
            train(dataset=lambda f: "data_prepared_nowhere/mosi"), TRAIN),
        Row(TRAIN, "a split with 0 rows", "exit", "split 'validation' has 0 rows (validation-00000-of-00001.parquet)",
            train(dataset=empty_split), TRAIN),
        Row(TRAIN, "labels outside the spec's label range (spec edited)", "exit",
            "split 'train', id … is outside the spec's label range [-1, 1]",
            train(dataset=spec_edit(label_range=lambda r: [-1.0, 1.0], neutral_band=lambda b: [-0.1, 0.1])), TRAIN),
        Row(TRAIN, "spec row counts that differ from the data", "exit",
            "split 'train' has 8 rows but its dataset_spec.json says 9",
            train(dataset=spec_edit(splits=lambda s: {**s, "train": {**s["train"], "rows": 9}})), TRAIN),
        Row(TRAIN, "spec feature width that differs from the data", "exit",
            "audio_features are 8 wide but dataset_spec.json says 9",
            train(dataset=spec_edit(modalities=lambda m: {**m, "audio": {**m["audio"], "dim": 9}})), TRAIN),
        Row(TRAIN, "the same id in two splits", "exit",
            "id 'demo_train_0' is in split 'train' and in split 'validation'",
            train(dataset=lambda f: small_demo(f, mutate=with_ids("validation", ["demo_train_0"]))), TRAIN),
        Row(TRAIN, "card data_files pointing outside the data folder", "exit",
            "path '../../elsewhere/train-*.parquet' points outside the data set's folder",
            train(dataset=card_edit("data/train-*.parquet", "../../elsewhere/train-*.parquet")), TRAIN),
        Row(TRAIN, "--dataset demo where a prepared folder ./demo exists", "recovered",
            "the folder ./demo is read (a local folder wins over the built-in demo's name)", local_demo_folder_wins),
        Row(TRAIN, "corrupt (truncated) parquet shard", "exit",
            "cannot read the prepared dataset in … (corrupt, truncated or missing parquet file?)",
            train(dataset=corrupt_parquet), TRAIN),
        Row(TRAIN, "dataset without a validation split", "exit", "has no 'validation' split",
            train(dataset=no_validation_split), TRAIN),
        Row(TRAIN, "prepared folder without dataset_spec.json (made before specs)", "exit",
            "has no dataset_spec.json (it was prepared before data-set specs existed, or not by dataset_scripts/): "
            "re-run the converter", train(dataset=demo_without_spec), TRAIN),
        Row(TRAIN, "dataset_spec.json with a bad value", "exit",
            "dataset_spec.json: key 'task': expected 'regression' or 'classification', got 'regresion'",
            train(dataset=demo_with_bad_spec), TRAIN),
        Row(TRAIN, "--metric_for_best_model not in the data set's metric set", "exit",
            "metric_for_best_model 'Accuracy' is not a metric of this data set (metric set 'mmsa_pm3'",
            train("--metric_for_best_model", "Accuracy"), TRAIN),
        Row(TRAIN, "kept rows without any modality", "warning",
            "train: 1 row(s) have none of the model's modalities (text, audio, vision) and are left out: "
            "['demo_train_0']", kept_rows_without_modality_warning(caplog)),
        Row(TRAIN, "too few steps for the data (near-constant validation predictions)", "warning",
            "student: the validation predictions are near-constant (prediction std … of the labels' std …): the model "
            "has learned (almost) nothing from the inputs. With a small data set, train for more steps",
            one_step_warning(caplog)),
        Row(TRAIN, "NaN in a training feature sequence", "exit", "train row 'demo_train_3': audio_features contains NaN",
            train("--stage", "teacher", dataset=nan_features), TRAIN),
        Row(TRAIN, "class label outside the data set's classes", "exit",
            "split 'train', id 'demo_train_2': label 5 is not one of the spec's 2 class ids 0..1",
            train(dataset=class_label_out_of_range), TRAIN),
        Row(TRAIN, "teacher folder without config.json", "exit",
            "method 'corrkd' needs a trained teacher; … has no config.json",
            train(teacher=checkpoint_without("config.json")), TRAIN),
        Row(TRAIN, "teacher folder without its weights", "exit", "no file named model.safetensors",
            train(teacher=checkpoint_without("model.safetensors")), TRAIN),
        Row(TRAIN, "resume_from_checkpoint is an incomplete checkpoint", "exit",
            "resume_from_checkpoint … is not a complete Trainer checkpoint (no readable trainer_state.json)",
            train("--stage", "teacher", resume=incomplete_checkpoint, run=resumed_run), TRAIN),
        Row(TRAIN, "resume checkpoint with a truncated model.safetensors", "exit",
            "resume_from_checkpoint …: …model.safetensors is not a readable safetensors file (truncated or corrupt",
            train("--stage", "teacher", resume=truncated_resume_checkpoint, run=resumed_run), TRAIN),
        Row(TRAIN, "resume checkpoint written with other model sizes", "exit",
            "resume_from_checkpoint … was saved by a run with other model sizes (size mismatch for ",
            train("--stage", "student", "--method", "none", "--hidden_size", "16", resume=checkpoint_of_other_sizes,
                  run=resumed_run), TRAIN),
        Row(TRAIN, "resume checkpoint of another run (another --output_dir)", "exit",
            "--resume_from_checkpoint …checkpoint-2 is not a checkpoint of this run: expected a checkpoint-N folder in "
            "…student_run (--output_dir …)", train("--stage", "student", "--method", "none",
                                                    resume=checkpoint_of("other_run", "student_run")), TRAIN),
        Row(TRAIN, "resume checkpoint written by another method", "exit",
            "--resume_from_checkpoint …checkpoint-2 was written by a student stage of method 'logit', but this stage "
            "is a student stage of method 'none'",
            train("--stage", "student", "--method", "none", run=resumed_run, resume=checkpoint_of(
                "run", "student_run", {"role": "student", "distillation_method": "logit"})), TRAIN),
        Row(TRAIN, "invalid YAML --config", "exit", "--config …c.yaml is not valid YAML: ",
            config_file(b"method: logit\nhidden_size: [8\n"), TRAIN),
        Row(TRAIN, "binary --config file", "exit", "--config …c.yaml is not a YAML text file (it is not UTF-8 text)",
            config_file(bytes(range(256)) * 4), TRAIN),
        Row(TRAIN, "bad --report_rates", "exit",
            "--report_rates must be comma-separated missing rates in [0, 1] (e.g. 0.0,0.5); '1.5' is not one",
            train("--report_rates", "0.0,1.5"), TRAIN),
        Row(TRAIN, "unknown --missing_protocol (before the teacher trains)", "exit",
            "--missing_protocol p9: unknown protocol 'p9'", train("--missing_protocol", "p9"), TRAIN),
        Row(TRAIN, "unknown method_kwargs key (before the teacher trains)", "exit",
            "method_kwargs ['bogus'] are not arguments of method 'corrkd'",
            train("--method_kwargs", '{"bogus": 1}'), TRAIN),
        Row(TRAIN, "--num_train_epochs 0", "exit",
            "--num_train_epochs 0 trains nothing: the teacher would be saved untrained",
            train("--num_train_epochs", "0"), TRAIN),
        Row(TRAIN, "NaN label in the training data", "exit",
            "train row 'demo_train_2' has label nan, not a finite number", train(dataset=nan_label), TRAIN),
        Row(TRAIN, "data-set card with invalid YAML", "exit", "README.md: the YAML front matter is not valid YAML",
            train(dataset=card_edit("configs:", "configs: [")), TRAIN),
        Row(TRAIN, "data-set card entry without 'path'", "exit",
            "README.md: configs[0].data_files[0] must have a 'split' and a 'path'",
            train(dataset=card_edit("path: data/train-", "file: data/train-")), TRAIN),
        Row(TRAIN, "feature sequences too long for memory", "exit",
            "row 'demo_train_0': audio_features has 10001 steps per row; hf_mmkd accepts at most 10000",
            train("--max_train_samples", "None", "--stage", "teacher", dataset=long_sequence("train")), TRAIN),
        Row(TRAIN, "--output_dir is a file", "exit", "--output_dir … exists and is not a folder",
            lambda t: (inputs(t) / "f").write_text("x") and train()(t) + ["--output_dir", str(inputs(t) / "f")],
            TRAIN),
        Row(TRAIN, "--output_dir contains the dataset", "exit", "--output_dir … contains the input",
            lambda t: train(dataset=small_demo)(t) + ["--output_dir", str(inputs(t))], TRAIN),
        Row(TRAIN, "--push_to_hub with an invalid --hub_model_id", "exit",
            "--hub_model_id: repo id 'me/two words' is not a valid Hub repository id",
            train("--push_to_hub", "--hub_model_id", "me/two words"), TRAIN),
        Row(TRAIN, "reused teacher trained with another hidden_size", "exit",
            "the teacher in … was not trained on this data with these arguments (model.hidden_size: 8 -> 16): train a "
            "matching one (--stage both --reuse_teacher never), or pass --reuse_teacher always",
            train("--hidden_size", "16", dataset=small_demo, teacher=trained_teacher()), TRAIN),
        Row(TRAIN, "reused teacher trained on another data set", "exit",
            "was not trained on this data with these arguments (data.fingerprint: ",
            train(dataset=lambda f: small_demo(f, seed=1), teacher=trained_teacher()), TRAIN),
        Row(TRAIN, "teacher without a provenance record", "exit",
            "holds a teacher without a provenance record (hf_mmkd_provenance.json: trained by an older hf_mmkd or "
            "elsewhere)", train(teacher=whole_checkpoint()), TRAIN),
        Row(TRAIN, "teacher with a truncated model.safetensors", "exit",
            "…teacher/model.safetensors is not a readable safetensors file (truncated or corrupt",
            train(dataset=small_demo, teacher=trained_teacher(truncate())), TRAIN),
        Row(TRAIN, "teacher whose config does not match its weights", "exit",
            "checkpoint …teacher: config.json does not match its weights: ",
            train(dataset=small_demo, teacher=trained_teacher(set_config(num_encoder_layers=2))), TRAIN),
        Row(TRAIN, "--gradient_accumulation_steps 0", "exit", "--gradient_accumulation_steps 0 must be >= 1",
            train("--gradient_accumulation_steps", "0"), TRAIN),
        Row(TRAIN, "--num_encoder_layers -1", "exit", "num_encoder_layers must be a positive int, got -1",
            train("--num_encoder_layers", "-1"), TRAIN),
        Row(TRAIN, "--report_to wandb without wandb installed", "exit",
            "--report_to wandb needs the wandb package, which is not installed (pip install wandb)",
            train("--report_to", "wandb"), TRAIN),
        Row(TRAIN, "--learning_rate 0 (would save an untrained model)", "exit",
            "--learning_rate 0 must be a positive finite number", train("--learning_rate", "0"), TRAIN),
        Row(TRAIN, "learning_rate: .inf in the YAML (before training starts)", "exit",
            "--learning_rate inf must be a positive finite number", config_file(b"learning_rate: .inf\n"), TRAIN),
        Row(TRAIN, "--output_dir '' (would write into the current folder)", "exit", "--output_dir is empty",
            train("--output_dir", ""), TRAIN),
        Row(TRAIN, "--config given twice", "exit", "--config is given 2 times (…a.yaml, …b.yaml); give one YAML file",
            lambda t: [(inputs(t) / n).write_text("seed: 1\n") for n in ("a.yaml", "b.yaml")] and train(
                "--config", str(inputs(t) / "a.yaml"), "--config", str(inputs(t) / "b.yaml"))(t), TRAIN),
        # hf-mmkd evaluate / predict / publish
        Row(EVALUATE, "checkpoint folder without config.json", "exit", "checkpoint … has no config.json",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=checkpoint_without("config.json"),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "checkpoint folder without its weights", "exit", "checkpoint … has no weights",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=checkpoint_without("model.safetensors"),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "corrupt (truncated) parquet shard", "exit",
            "cannot read the prepared dataset in … (corrupt, truncated or missing parquet file?)",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=whole_checkpoint(),
                    dataset=lambda f: demo_with_test_split(f, broken_split="test")), HF_MMKD),
        Row(EVALUATE, "checkpoint trained on labels of another meaning", "exit",
            "checkpoint 'other_labels' was trained on 'ratings', whose labels are a score in [0, 10]; … but 'hf_mmkd "
            "synthetic demo' has labels that are a score in [-3, 3]; … cannot be scored against these labels",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=checkpoint_of_other_labels,
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "prepared folder without dataset_spec.json", "exit",
            "has no dataset_spec.json … re-run the converter",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=whole_checkpoint(),
                    dataset=demo_without_spec), HF_MMKD),
        Row(EVALUATE, "unknown protocol", "exit", "unknown protocol 'p7'",
            hf_mmkd("evaluate", "--protocol", "p7", "--out", "{out}", checkpoint=whole_checkpoint(),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "--out is a file (before the evaluation)", "exit", "--out … exists and is not a folder",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{in}/afile", checkpoint=whole_checkpoint(),
                    dataset=demo_with_test_split, files=lambda f: (f / "afile").write_text("x")), HF_MMKD),
        Row(EVALUATE, "--out holds the checkpoint", "exit", "--out … contains the input",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{in}", checkpoint=edited_checkpoint(lambda f: None),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "--out holds a report file hf_mmkd did not write", "exit",
            "…hf_mmkd_synthetic_demo_p2.json exists and was not written by hf_mmkd",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{in}/reports", checkpoint=whole_checkpoint(),
                    dataset=lambda f: "demo",
                    files=lambda f: full_folder(f, "reports", ["hf_mmkd_synthetic_demo_p2.json"])), HF_MMKD),
        Row(EVALUATE, "truncated model.safetensors", "exit",
            "…model.safetensors is not a readable safetensors file (truncated or corrupt",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=edited_checkpoint(truncate()),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "config whose sizes do not match its weights", "exit",
            "checkpoint … config.json does not match its weights: mmkd.",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=edited_checkpoint(
                set_config(hidden_size=16)), dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "data-set card entry without 'path'", "exit",
            "README.md: configs[0].data_files[1] must have a 'split' and a 'path'",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=whole_checkpoint(),
                    dataset=card_edit("path: data/validation-", "paths: data/validation-")), HF_MMKD),
        Row(EVALUATE, "feature sequences too long for memory", "exit",
            "row 'demo_test_0': audio_features has 10001 steps per row; hf_mmkd accepts at most 10000",
            hf_mmkd("evaluate", "--protocol", "p2", "--rates", "0.0", "--seeds", "1", "--out", "{out}",
                    checkpoint=whole_checkpoint(), dataset=long_sequence("test")), HF_MMKD),
        Row(EVALUATE, "--stem with a folder in it (../x, an absolute path)", "exit",
            "--stem '../x' must be a plain file name (no folder, no '..')",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", "--stem", "../x", checkpoint=whole_checkpoint(),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "NaN in a feature sequence", "exit", "row 'demo_test_1': audio_features contains NaN or inf",
            hf_mmkd("evaluate", "--protocol", "p2", "--rates", "0.0", "--seeds", "1", "--out", "{out}",
                    checkpoint=whole_checkpoint(), dataset=nan_test_features), HF_MMKD),
        Row(EVALUATE, "config.json with a string \"hidden_size\": \"8\"", "exit",
            "cannot load checkpoint …ckpt: hidden_size must be a positive int, got '8'",
            hf_mmkd("evaluate", "--protocol", "p2", "--rates", "0.0", "--seeds", "1", "--out", "{out}",
                    checkpoint=edited_checkpoint(set_config(hidden_size="8")), dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "config.json holding a JSON list", "exit",
            "checkpoint …ckpt: config.json must hold a JSON object of settings, got a list",
            hf_mmkd("evaluate", "--protocol", "p2", "--out", "{out}", checkpoint=edited_checkpoint(config_json("[1, 2]")),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(EVALUATE, "--seeds -1", "exit", "argument --seeds: a mask seed must be an integer >= 0, got '-1'",
            hf_mmkd("evaluate", "--protocol", "p2", "--seeds", "-1", "--out", "{out}", checkpoint=whole_checkpoint(),
                    dataset=demo_with_test_split), HF_MMKD),
        Row(PREDICT, "NaN in a feature sequence of --dataset", "exit",
            "row 'demo_test_1': audio_features contains NaN or inf",
            hf_mmkd("predict", "--out", "{in}/p.json", checkpoint=whole_checkpoint(), dataset=nan_test_features),
            HF_MMKD),
        Row(PREDICT, "checkpoint folder without its weights", "exit", "no file named model.safetensors",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=checkpoint_without("model.safetensors"),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "checkpoint folder without config.json", "exit", "is not a checkpoint folder (no config.json)",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=checkpoint_without("config.json"),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "a folder given as --audio", "exit", "--audio … is a folder; give the path of one file",
            hf_mmkd("predict", "--audio", "{in}", checkpoint=whole_checkpoint("backbones")), HF_MMKD),
        Row(PREDICT, "an audio file longer than the clip limit (600 s)", "exit",
            "long.wav: the clip is 601.0 s long, more than the 600 s that hf_mmkd decodes per clip",
            hf_mmkd("predict", "--audio", "{in}/long.wav", checkpoint=whole_checkpoint("backbones"),
                    files=hour_long_wav), HF_MMKD),
        Row(PREDICT, "media file not found", "exit", "--audio file … does not exist",
            hf_mmkd("predict", "--audio", "{in}/gone.wav", checkpoint=whole_checkpoint("backbones")), HF_MMKD),
        Row(PREDICT, "corrupt media file", "exit", "cannot open media file",
            hf_mmkd("predict", "--video", "{in}/bad.mp4", checkpoint=whole_checkpoint("backbones"),
                    files=lambda f: (f / "bad.mp4").write_bytes(b"not a video" * 20)), HF_MMKD),
        Row(PREDICT, "zero-length audio", "exit", "the audio stream has no samples (zero-length audio)",
            hf_mmkd("predict", "--audio", "{in}/empty.wav", checkpoint=whole_checkpoint("backbones"),
                    files=lambda f: write_wav(f / "empty.wav", seconds=0)), HF_MMKD),
        Row(PREDICT, "empty or whitespace-only text", "exit", "text is empty",
            hf_mmkd("predict", "--text", "  ", checkpoint=whole_checkpoint("backbones")), HF_MMKD),
        Row(PREDICT, "no input at all", "exit", "nothing to predict from",
            hf_mmkd("predict", checkpoint=whole_checkpoint()), HF_MMKD),
        Row(PREDICT, "truncated model.safetensors", "exit",
            "…model.safetensors is not a readable safetensors file (truncated or corrupt",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=edited_checkpoint(truncate()),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "config whose sizes do not match its weights", "exit",
            "config.json does not match its weights: ",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=edited_checkpoint(set_config(
                vision_feature_dim=None)), files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "feature sequence too long for memory", "exit",
            "features['audio'] has 10001 steps per row; hf_mmkd accepts at most 10000",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=whole_checkpoint(),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((10001, 8), np.float32))), HF_MMKD),
        Row(PREDICT, "--out is a file hf_mmkd did not write (--overwrite)", "exit",
            "--out …preds.json exists and was not written by hf_mmkd (it is not listed in ….hf_mmkd_outputs.json); "
            "hf_mmkd never replaces it, even with --overwrite",
            hf_mmkd("predict", "--dataset", "demo", "--out", "{in}/preds.json", "--overwrite",
                    checkpoint=whole_checkpoint(), files=lambda f: (f / "preds.json").write_text("my notes")), HF_MMKD),
        Row(PREDICT, "--out written by an earlier predict, without --overwrite", "exit",
            "--out …preds.json exists (written by hf-mmkd predict); pass --overwrite to replace it",
            hf_mmkd("predict", "--dataset", "demo", "--out", "{in}/preds.json", checkpoint=whole_checkpoint(),
                    files=earlier_predictions), HF_MMKD),
        Row(PREDICT, "--out is a folder", "exit", "--out … is a folder; give the path of the file to write",
            hf_mmkd("predict", "--dataset", "demo", "--out", "{in}", checkpoint=whole_checkpoint()), HF_MMKD),
        Row(PREDICT, "--out inside the checkpoint folder", "exit",
            "--out …p.json lies inside the input …ckpt: hf-mmkd predict never writes over or into its inputs",
            hf_mmkd("predict", "--dataset", "demo", "--out", "{in}/ckpt/p.json",
                    checkpoint=edited_checkpoint(lambda f: None)), HF_MMKD),
        Row(PREDICT, "config.json holding a JSON list", "exit",
            "checkpoint …ckpt: config.json must hold a JSON object of settings, got a list",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=edited_checkpoint(config_json("[1, 2]")),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "mistyped checkpoint folder (as evaluate says it)", "exit",
            "checkpoint folder …/studnet does not exist",
            hf_mmkd("predict", "{in}/run/studnet", "--features", "{in}/x.npz",
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "all-NaN weights (no NaN score)", "exit",
            "checkpoint …ckpt: the model's output is NaN or infinite for this input",
            hf_mmkd("predict", "--features", "{in}/x.npz", checkpoint=edited_checkpoint(nan_weights),
                    files=lambda f: np.savez(f / "x.npz", audio=np.ones((3, 8)))), HF_MMKD),
        Row(PREDICT, "--start nan", "exit", "start (--start) must be a time in seconds >= 0 from the start of the "
            "media file, got nan", hf_mmkd("predict", "--audio", "{in}/a.wav", "--start", "nan",
                                           checkpoint=whole_checkpoint("backbones"),
                                           files=lambda f: write_wav(f / "a.wav")), HF_MMKD),
        Row(PREDICT, "negative --start (would count from the end)", "exit",
            "start (--start) must be a time in seconds >= 0 from the start of the media file, got -5",
            hf_mmkd("predict", "--audio", "{in}/a.wav", "--start", "-5", checkpoint=whole_checkpoint("backbones"),
                    files=lambda f: write_wav(f / "a.wav")), HF_MMKD),
        Row("hf-mmkd demo", "checkpoint folder without config.json", "exit",
            "is not a checkpoint folder (no config.json)",
            hf_mmkd("demo", checkpoint=checkpoint_without("config.json")), HF_MMKD),
        Row("hf-mmkd demo", "--dataset without the --split", "exit", "has no split 'dev' (splits: ",
            hf_mmkd("demo", "--dataset", "demo", "--split", "dev", checkpoint=whole_checkpoint()), HF_MMKD),
        Row("hf-mmkd demo", "--port out of range", "exit", "--port must be a port number 1-65535, got 70000",
            hf_mmkd("demo", "--port", "70000", checkpoint=whole_checkpoint()), HF_MMKD),
        Row(PUBLISH, "checkpoint folder without its weights", "exit", "checkpoint … has no weights",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}",
                    checkpoint=checkpoint_without("model.safetensors")), HF_MMKD),
        Row(PUBLISH, "auto_map naming code outside the checkpoint folder", "exit",
            "config.json: auto_map entry '../elsewhere/modeling_mmkd.MMKDForSentiment' must be MODULE.CLASS with "
            "MODULE a .py file in the checkpoint folder itself",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}",
                    checkpoint=edited_checkpoint(code_outside_the_folder)), HF_MMKD),
        Row(PUBLISH, "checkpoint folder without config.json", "exit", "checkpoint … has no config.json",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}",
                    checkpoint=checkpoint_without("config.json")), HF_MMKD),
        Row(PUBLISH, "--results file that is not text", "exit", "results file …r.json is not UTF-8 text",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}", "--results", "{in}/r.json",
                    checkpoint=whole_checkpoint(), files=lambda f: (f / "r.json").write_bytes(bytes(range(256)))),
            HF_MMKD),
        Row(PUBLISH, "repo id the Hub rejects (--dry-run too)", "exit",
            "--repo-id: repo id 'me/bad--name' is not a valid Hub repository id",
            hf_mmkd("publish", "--repo-id", "me/bad--name", "--dry-run", "--out", "{out}",
                    checkpoint=whole_checkpoint()), HF_MMKD),
        Row(PUBLISH, "repo id without an owner", "exit", "--repo-id: repo id 'x' is not of the form owner/name",
            hf_mmkd("publish", "--repo-id", "x", "--dry-run", "--out", "{out}", checkpoint=whole_checkpoint()),
            HF_MMKD),
        Row(PUBLISH, "truncated model.safetensors", "exit",
            "…model.safetensors is not a readable safetensors file (truncated or corrupt",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}",
                    checkpoint=edited_checkpoint(truncate())), HF_MMKD),
        Row(PUBLISH, "config whose sizes do not match its weights", "exit",
            "config.json does not match its weights: ",
            hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--out", "{out}",
                    checkpoint=edited_checkpoint(set_config(hidden_size=16))), HF_MMKD),
        Row(PUBLISH, "--out is the run folder holding the checkpoint (--overwrite)", "exit",
            "--out … contains the input …student", lambda t: hf_mmkd("publish", "--repo-id", "me/x", "--dry-run",
                                                                    "--overwrite", checkpoint=run_folder)(t)
            + ["--out", str(inputs(t) / "run")], HF_MMKD),
        Row(PUBLISH, "--overwrite of a folder holding files hf_mmkd did not write", "exit",
            "which hf_mmkd did not write", hf_mmkd("publish", "--repo-id", "me/x", "--dry-run", "--overwrite",
                                                   "--out", "{in}/full", checkpoint=whole_checkpoint(),
                                                   files=full_folder), HF_MMKD),
    ]


# Rows whose function needs pytest's caplog get it through `rows(caplog)`; ids come from a caplog-free build.
ROWS = rows()
IDS = [f"{r.surface.split('/')[-1]}: {r.case}" for r in ROWS]
assert len(set(IDS)) == len(IDS), "two rows share a surface and a situation"


def shows(text: str, expect: str) -> bool:
    """`expect` appears in `text`; "…" in `expect` stands for any text (a path, say) between its parts."""
    at = 0
    for part in expect.split("…"):
        at = text.find(part.strip(" "), at)
        if at < 0:
            return False
        at += len(part.strip(" "))
    return True


def run_command(script: str, argv: list[str]) -> tuple[int, str]:
    """Run `python script argv` in this process through its `__main__` block; return (exit status, stderr).

    As the interpreter does: SystemExit(str) prints the text and exits 1, SystemExit(int) exits with it, an
    uncaught exception prints its traceback and exits 1.
    """
    err, out = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [script if script == HF_MMKD else str(REPO_ROOT / script), *map(str, argv)]
    code = 0
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                if script == HF_MMKD:
                    from hf_mmkd.cli import main

                    sys.exit(main(list(map(str, argv))))
                runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
            except SystemExit as exit_:
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
                    code = 1
                else:
                    code = exit_.code or 0
            except Exception:  # noqa: BLE001 - what an uncaught exception does to `python script.py`
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved
    return code, err.getvalue()


# train.py rows that fail at a batch, after the Trainer has started (its run folder may hold a checkpoint); every
# other train.py row fails before anything is written.
FAILS_WHILE_TRAINING = {"feature sequences too long for memory", "resume checkpoint written with other model sizes"}


def output_dir(argv: list[str]) -> Path:
    """train.py's --output_dir in `argv` (the last one given counts, as argparse reads it)."""
    at = len(argv) - 1 - [str(a) for a in argv][::-1].index("--output_dir")
    return Path(argv[at + 1])


def leftovers(tmp: Path) -> list[str]:
    """Everything in tmp except the inputs folder: an output folder, temp folders, files."""
    return sorted(p.name for p in tmp.iterdir() if p.name != "in")


@pytest.mark.parametrize("index", range(len(ROWS)), ids=IDS)
def test_bad_input(index, tmp_path, caplog):
    row = rows(caplog)[index]
    tmp = tmp_path / "case"
    tmp.mkdir()
    if row.outcome == "error":
        with pytest.raises((ValueError, OSError)) as info:
            row.run(tmp)
        assert shows(str(info.value), row.expect), str(info.value)
    elif row.outcome == "exit":
        argv = row.run(tmp)
        code, stderr = run_command(row.script, argv)
        assert code != 0, stderr[-2000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert shows(stderr, row.expect), stderr[-2000:]
        assert len([line for line in stderr.splitlines() if ": error: " in line]) == 1, stderr[-2000:]
        if row.script == TRAIN and row.case in FAILS_WHILE_TRAINING:  # nothing that looks like a finished result
            out = output_dir(argv)
            assert not any((out / name).exists() for name in ("teacher", "student", "results.json")), leftovers(out)
        else:  # no output folder at all (train.py: not even an empty run folder), no temporary files
            assert leftovers(tmp) == []
    elif row.outcome == "warning":
        assert shows(row.run(tmp), row.expect)
    else:
        assert row.run(tmp) is None  # the row's function asserts the documented recovery


def test_commands_really_exit_nonzero_in_a_subprocess(tmp_path):
    """One row of each command, run as `python script ...` (hf-mmkd: `python -m hf_mmkd.cli`) in real processes
    (concurrently, to save time): a non-zero status, one error line and no traceback on stderr."""
    picks = {PREPARE_MMSA: "truncated pickle", PREPARE_MEDIA: "corrupt media file", TRAIN: "unknown stage",
             HF_MMKD: "repo id without an owner"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for script, case in picks.items():
        row = next(r for r in ROWS if r.script == script and r.case == case)
        tmp = tmp_path / Path(script).stem
        tmp.mkdir()
        command = [sys.executable, "-m", "hf_mmkd.cli"] if script == HF_MMKD else [sys.executable, script]
        procs[script] = (row, tmp, subprocess.Popen([*command, *row.run(tmp)], cwd=REPO_ROOT, env=env,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for script, (row, tmp, proc) in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0 and shows(stderr, row.expect), (script, proc.returncode, stderr[-2000:])
        assert "Traceback" not in stderr and len([ln for ln in stderr.splitlines() if ": error: " in ln]) == 1, stderr
        if script != TRAIN:
            assert leftovers(tmp) == []


# ---------------------------------------------------------------------------------------- docs/errors.md


def render_errors_markdown(table: list[Row] | None = None) -> str:
    """docs/errors.md's "Errors you may see" page, markers included, rendered from the table."""
    outcome = {"error": "raises", "exit": "exits non-zero", "warning": "warns", "recovered": "recovers"}
    lines = [
        START,
        "# Errors you may see",
        "",
        "Generated from `tests/test_bad_inputs.py` (one test per line; `python tests/test_bad_inputs.py` prints "
        "this page). Errors name the problem (file, split, key, row); commands exit with a non-zero status and "
        "leave no partial output.",
        "",
        "| where | situation | outcome | message / behaviour |",
        "|---|---|---|---|",
    ]
    for row in table or ROWS:
        shown = row.expect if row.outcome == "recovered" else f"`{row.expect}`"
        where = f"`{row.surface}`" if row.surface.endswith(".py") or row.surface.startswith("hf-mmkd") else row.surface
        lines.append(f"| {where} | {row.case} | {outcome[row.outcome]} | {shown} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def test_errors_page_matches_the_table():
    """docs/errors.md must hold the rendered page verbatim (the README links to it). If this fails, paste
    `python tests/test_bad_inputs.py`'s output into docs/errors.md (replacing the old text between the markers)."""
    page = (REPO_ROOT / "docs" / "errors.md").read_text()
    assert START in page and END in page, "docs/errors.md lacks the errors section: paste `python tests/test_bad_inputs.py`"
    section = page[page.index(START): page.index(END) + len(END)] + "\n"
    assert section == render_errors_markdown(), "docs/errors.md is stale: paste `python tests/test_bad_inputs.py`"


if __name__ == "__main__":
    print(render_errors_markdown(), end="")
