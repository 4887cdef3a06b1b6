"""`hf-mmkd demo`: try a checkpoint in the browser and watch what a missing modality does (a Gradio app).

    build_app(checkpoint, teacher=None, dataset=None, split="test", trust_remote_code=False) -> gradio.Blocks

The page has one input per modality the checkpoint reads (a transcript box for text; an audio upload or the
microphone, a video upload, where the checkpoint has a raw-media backbone; a features `.npz` upload, as
`hf-mmkd predict --features` takes, where it reads pre-extracted features), a checkbox per modality to switch it
off, a missing-rate slider that drops steps with the package's own P2 masking (`MissingModalitySimulator("p2",
rate, seed)` in evaluation mode: the same rate, seed and example give the same answer), and with a prepared
data set an example picker over its real rows (id, true label, transcript). It shows the score with its label on
the training data's range (or the class probabilities), a chart and a table of the prediction for every non-empty
subset of the given modalities, and with a teacher, teacher and student side by side.

One code path with `hf-mmkd predict`: `DemoSession.run` calls `hf_mmkd.inference.prepare_example` and
`predict_prepared` (the two halves of `predict`); at rate 0 with every modality on, its answer is `predict`'s.
The subset chart masks the same prepared row with P3's whole-modality drop (a fixed availability set), which is
how a modality is missing everywhere else in the package.

Errors are one line in the page (`error_message`), never a traceback, and the app keeps serving. gradio is an
optional extra (`pip install -e ".[demo]"`) and is imported only when the app is built, so `hf-mmkd --help`
does not import it. `space_files(repo_id)` writes the Hugging Face Space of a published checkpoint: its `app.py`
calls this module's `build_app(repo_id, trust_remote_code=True)`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs, row_key
from hf_mmkd.inference import LoadedCheckpoint, _read_features, load_checkpoint, predict_prepared, prepare_example
from hf_mmkd.io import USER_ERRORS, error_message
from hf_mmkd.modeling.configuration_mmkd import MODALITIES

logger = logging.getLogger(__name__)

SHORT = {"text": "T", "audio": "A", "vision": "V"}
DEFAULT_SEED = 1111  # the simulator's default evaluation seed
NO_EXAMPLE = "(your own input)"


def load_for_demo(checkpoint, trust_remote_code: bool = False) -> LoadedCheckpoint:
    """The model and processor of a checkpoint (folder or Hub id), on the CPU. `trust_remote_code=True` (the Space)
    loads them with the code the checkpoint ships: the classes its `config.json` / `processor_config.json`
    `auto_map` names, imported from the checkpoint as `trust_remote_code=True` does (the Auto classes would pick
    the installed hf_mmkd's, which `import hf_mmkd` registers). Otherwise `hf_mmkd.inference.load_checkpoint`."""
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    if not trust_remote_code:
        return load_checkpoint(checkpoint, device="cpu")
    import json

    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.utils import cached_file

    from hf_mmkd.inference import load_model

    def shipped_class(filename: str, auto: str):
        auto_map = json.loads(Path(cached_file(str(checkpoint), filename)).read_text(encoding="utf-8")).get("auto_map")
        if not auto_map or auto not in auto_map:
            raise ValueError(f"{checkpoint}: {filename} names no {auto} in its auto_map (no code shipped)")
        return get_class_from_dynamic_module(auto_map[auto], str(checkpoint))

    model = load_model(checkpoint, "cpu", model_class=shipped_class("config.json", "AutoModelForSequenceClassification"))
    processor = shipped_class("processor_config.json", "AutoProcessor").from_pretrained(str(checkpoint))
    return LoadedCheckpoint(model, processor)


def input_kinds(config) -> dict[str, str]:
    """{modality: "text" | "media" | "features"} for the modalities a checkpoint reads: what its input widget is."""
    kinds = {}
    for m in MODALITIES:
        kind = config.encoder_kind(m)
        if kind == "features":
            kinds[m] = "features"
        elif kind == "backbone":
            kinds[m] = "text" if m == "text" else "media"
    return kinds


def range_text(config) -> str:
    """What the score means, from the training data's spec: its range and neutral band, or its classes."""
    spec = config.dataset_spec or {}
    if config.task == "classification":
        return "classes: " + ", ".join(config.label_names(config.num_labels))
    if spec.get("label_range"):
        (lo, hi), (a, b) = spec["label_range"], spec.get("neutral_band") or (0, 0)
        return f"score on [{lo:g}, {hi:g}], neutral in [{a:g}, {b:g}]"
    return "score"


def answer_text(result: dict) -> str:
    """One line: the score and its label (or the class probabilities) and the modalities used."""
    used = "+".join(result["modalities_used"]) or "none"
    if result.get("probabilities"):
        probs = ", ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
        return f"{result['label']} (p = {result['score']:.4f}; {probs}) from {used}"
    return f"score {result['score']:+.4f} ({result['label']}) from {used}"


def _mask_batch(loaded: LoadedCheckpoint, batch: dict, protocol: str, key: int, **kwargs) -> dict:
    """`batch` after `MissingModalitySimulator(protocol, **kwargs)` in evaluation mode (row key `key`; dropped
    tokens become the checkpoint tokenizer's unk id, as in `hf-mmkd evaluate`), with only the model's input keys."""
    unk = getattr(loaded.processor.tokenizer, "unk_token_id", None)
    simulator = MissingModalitySimulator(protocol, training=False, **kwargs, **({} if unk is None else
                                                                               {"unk_token_id": unk}))
    return model_inputs(simulator({**batch, "row_key": torch.tensor([key])}))


@dataclass
class DemoSession:
    """One checkpoint (and optionally its teacher) and an optional prepared split: what the page's handlers call.

    `run(inputs, enabled, rate, seed, example_id)` -> {"student": result, "teacher": result | None, "subsets":
    rows}; `inputs` maps a modality to its value (a transcript, a media file path, a features `.npz` path);
    `enabled` the modalities switched on. Every user error is raised as a ValueError / OSError naming the input."""

    student: LoadedCheckpoint
    teacher: LoadedCheckpoint | None = None
    rows: Any = None  # a datasets.Dataset (one prepared split) or None
    spec: dict | None = None
    _tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hf_mmkd_demo_")))

    @property
    def kinds(self) -> dict[str, str]:
        """The input widgets: the union of the student's and the teacher's modalities."""
        kinds = dict(input_kinds(self.student.model.config))
        if self.teacher is not None:
            for m, k in input_kinds(self.teacher.model.config).items():
                kinds.setdefault(m, k)
        return {m: kinds[m] for m in MODALITIES if m in kinds}

    # ---- inputs ------------------------------------------------------------------------------------------
    def _arguments(self, loaded: LoadedCheckpoint, inputs: dict[str, Any], enabled) -> dict[str, Any]:
        """`prepare_example`'s arguments for one checkpoint from the page's inputs: the switched-on modalities it
        reads, each as its kind takes it."""
        kinds = input_kinds(loaded.model.config)
        args: dict[str, Any] = {}
        features = {}
        for m in MODALITIES:
            value = inputs.get(m)
            if m not in enabled or m not in kinds or value is None or (isinstance(value, str) and not value.strip()):
                continue  # switched off, not read by this checkpoint, or left empty (a blank transcript too)
            if kinds[m] == "text":
                args["text"] = value
            elif kinds[m] == "features":
                features[m] = _features_of(value, m)
            elif m == "audio":
                args["audio"] = _media_path(value, "audio")
            else:
                args["video"] = _media_path(value, "video")
                args["use_video_audio"] = False  # the audio input is the audio; switching it off means off
        if features:
            args["features"] = features
        return args

    def _answer(self, loaded: LoadedCheckpoint, inputs, enabled, rate: float, seed: int, key: int):
        """(result, subset rows) of one checkpoint, or (None, []) if none of its modalities is given."""
        args = self._arguments(loaded, inputs, enabled)
        if not args:
            return None, []
        batch = prepare_example(loaded, **args)
        if rate > 0:
            batch = _mask_batch(loaded, batch, "p2", key, rate=rate, seed=seed)
        result = predict_prepared(loaded, batch)
        given = result["modalities_used"]
        subsets = []
        for n in range(1, len(given) + 1):
            for subset in itertools.combinations(given, n):
                sub = predict_prepared(loaded, _mask_batch(loaded, batch, "p3", key, availability=set(subset)))
                subsets.append({"modalities": "+".join(SHORT[m] for m in subset), **sub})
        return result, subsets

    def run(self, inputs: dict[str, Any], enabled, rate: float = 0.0, seed: int = DEFAULT_SEED,
            example_id: str | None = None) -> dict:
        """The answer of the student (and teacher) on the page's inputs; see the class docstring."""
        enabled = set(enabled)
        if not enabled & set(self.kinds):
            raise ValueError("every modality is switched off: switch at least one on")
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"missing rate must lie in [0, 1], got {rate}")
        key = row_key(example_id if example_id else "demo input")
        student, student_subsets = self._answer(self.student, inputs, enabled, float(rate), int(seed), key)
        if student is None:
            raise ValueError("no input given for a switched-on modality of the model: type a transcript or upload "
                             "a file (" + ", ".join(f"{m}: {k}" for m, k in input_kinds(self.student.model.config)
                                                   .items()) + ")")
        teacher, teacher_subsets = (None, [])
        if self.teacher is not None:
            teacher, teacher_subsets = self._answer(self.teacher, inputs, enabled, float(rate), int(seed), key)
        rows = [{"model": "student", **r} for r in student_subsets]
        rows += [{"model": "teacher", **r} for r in teacher_subsets]
        return {"student": student, "teacher": teacher, "subsets": rows}

    # ---- examples of a prepared split --------------------------------------------------------------------
    def example_choices(self) -> list[str]:
        """One choice per row of the split: "id | true label | transcript"."""
        if self.rows is None:
            return []
        column = _label_column(self.spec)
        names = self.rows.column_names  # whole columns: reading 1000s of rows one by one takes seconds
        labels = self.rows[column] if column in names else [None] * len(self.rows)
        texts = self.rows["raw_text"] if "raw_text" in names else [None] * len(self.rows)
        return [f"{row_id} | {_label_text(label, self.spec)} | {(text or '')[:70]}"
                for row_id, label, text in zip(self.rows["id"], labels, texts)]

    def example(self, choice: str) -> tuple[dict[str, Any], str, str]:
        """(inputs, row id, true label) of the chosen row: its transcript, and its features (or audio) written
        to `.npz` (`.wav`) files in this session's own temporary folder for the upload widgets."""
        row_id = choice.split(" | ", 1)[0]
        ids = self.rows["id"]
        if row_id not in ids:
            raise ValueError(f"example {row_id!r} is not a row of the data set")
        row = self.rows[ids.index(row_id)]
        inputs: dict[str, Any] = {}
        kinds = self.kinds
        if "text" in kinds and row.get("has_text") and row.get("raw_text"):
            inputs["text"] = row["raw_text"]
        for m in ("audio", "vision"):
            if m not in kinds or not row.get(f"has_{m}"):
                continue
            if kinds[m] == "features" and row.get(f"{m}_features") is not None:
                path = self._tmp / f"{_safe(row_id)}_{m}.npz"
                np.savez(path, **{m: np.asarray(row[f"{m}_features"], dtype=np.float32)})
                inputs[m] = str(path)
            elif kinds[m] == "media" and m == "audio" and row.get("audio") is not None:
                path = self._tmp / f"{_safe(row_id)}.wav"
                path.write_bytes(row["audio"]["bytes"])
                inputs[m] = str(path)
        return inputs, row_id, _label_text(row.get(_label_column(self.spec)), self.spec)


def _page_error(message: str, inputs: dict[str, Any]) -> str:
    """The page's one-line error: an uploaded file is named by its own name, not by gradio's upload path."""
    for value in inputs.values():
        if value is None or value == "":
            continue
        path = _upload_path(value)
        with contextlib.suppress(OSError):  # a transcript is no file (and may be too long for a file name)
            if path.is_file():
                message = message.replace(str(path), path.name)
    return f"error: {message}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def _label_column(spec: dict | None) -> str:
    return (spec or {}).get("label_column") or "label"


def _label_text(value, spec: dict | None) -> str:
    if value is None:
        return "no label"
    names = (spec or {}).get("class_names")
    if names:
        return f"true class {names[int(value)]}"
    return f"true score {float(value):+.2f}"


def _features_of(value, m: str) -> np.ndarray:
    """The `m` array of a features `.npz` upload (as `hf-mmkd predict --features` reads it)."""
    path = _upload_path(value)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{m} features file {path.name} is not an .npz file (expected an .npz with a '{m}' array "
                         f"of shape (steps, D))")
    features = _read_features(path)
    if m not in features:
        raise ValueError(f"{m} features file {path.name} has no '{m}' array (it has {sorted(features)})")
    return features[m]


_MEDIA_SUFFIXES = {
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus", ".webm", ".mp4", ".mov", ".mkv", ".avi"),
    "video": (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"),
}


def _media_path(value, what: str) -> str:
    path = _upload_path(value)
    if path.suffix.lower() not in _MEDIA_SUFFIXES[what]:
        raise ValueError(f"{what} file {path.name} is not an {what} file (expected one of "
                         f"{', '.join(_MEDIA_SUFFIXES[what])})")
    return str(path)


def _upload_path(value) -> Path:
    """A gradio upload (a path, or an object with `.name` / `path`) as a Path."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    value = getattr(value, "name", value)
    return Path(os.fspath(value))


def load_examples(dataset, split: str = "test"):
    """(rows, spec dict) of one split of a prepared data set (`hf_mmkd.data.prepared.load_dataset_and_spec`)."""
    from hf_mmkd.data.prepared import load_dataset_and_spec

    splits, spec = load_dataset_and_spec(dataset)
    if split not in splits:
        raise ValueError(f"{dataset} has no split {split!r} (splits: {list(splits)})")
    return splits[split], spec.to_dict()


# ------------------------------------------------------------------------------------------------ the page


def build_app(checkpoint, teacher=None, dataset=None, split: str = "test", trust_remote_code: bool = False,
              title: str | None = None):
    """The Gradio page of a checkpoint (see the module docstring); `launch()` it."""
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the demo needs gradio: pip install -e \".[demo]\"") from None
    import pandas as pd

    rows, spec = load_examples(dataset, split) if dataset is not None else (None, None)
    session = DemoSession(load_for_demo(checkpoint, trust_remote_code),
                          load_for_demo(teacher, trust_remote_code) if teacher is not None else None, rows, spec)
    kinds = session.kinds
    config = session.student.model.config
    if title is None and isinstance(checkpoint, (str, os.PathLike)):  # a folder's name, or the Hub id
        title = f"hf_mmkd: {Path(checkpoint).name if Path(checkpoint).exists() else checkpoint}"
    name = title or "hf_mmkd"

    with gr.Blocks(title=name) as demo:
        gr.Markdown(f"## {name}\nSentiment with missing modalities: give any of the model's inputs, switch "
                    f"modalities off, raise the missing rate, and watch the answer move ({range_text(config)}).")
        example_id = gr.State(None)
        if rows is not None:
            picker = gr.Dropdown([NO_EXAMPLE, *session.example_choices()], value=NO_EXAMPLE,
                                 label=f"Example from {spec.get('name', dataset)} ({split}): id | true label | "
                                       "transcript", elem_id="example")
            truth = gr.Textbox(label="True label of the example", interactive=False, elem_id="truth")
        widgets, switches = {}, {}
        with gr.Row():
            for m, kind in kinds.items():
                with gr.Column():
                    switches[m] = gr.Checkbox(value=True, label=f"use {m}", elem_id=f"use-{m}")
                    if kind == "text":
                        widgets[m] = gr.Textbox(label="Transcript", lines=2, elem_id="input-text")
                    elif kind == "features":
                        dim = getattr(session.student.model.config, f"{m}_feature_dim", None)
                        widgets[m] = gr.File(label=f"{m} features (.npz with a '{m}' array of shape (steps, "
                                                   f"{dim}))", elem_id=f"input-{m}")
                    elif m == "audio":
                        widgets[m] = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                                              elem_id="input-audio")
                    else:
                        widgets[m] = gr.File(label="Video file", file_types=["video"], elem_id="input-vision")
        with gr.Row():
            rate = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Missing rate (P2: drops this share of every "
                                                                    "modality's steps)", elem_id="rate")
            seed = gr.Number(value=DEFAULT_SEED, precision=0, label="Mask seed", elem_id="seed")
        submit = gr.Button("Predict", variant="primary", elem_id="submit")
        error = gr.Textbox(label="Message", interactive=False, elem_id="error", max_lines=1)
        with gr.Row():
            student_box = gr.Textbox(label="Student" if session.teacher else "Prediction", interactive=False,
                                     elem_id="answer")
            teacher_box = gr.Textbox(label="Teacher", interactive=False, elem_id="teacher-answer",
                                     visible=session.teacher is not None)
        y_name = "probability" if config.task == "classification" else "score"
        chart = gr.BarPlot(x="bar", y=y_name, color="model", x_title="given modalities", elem_id="chart",
                           label="Prediction for every subset of the given modalities (T text, A audio, V vision)")
        table = gr.Dataframe(headers=["model", "modalities", y_name, "label"], label="Per subset",
                             interactive=False, elem_id="subsets")

        order = list(kinds)

        def on_submit(*values):
            n = len(order)
            inputs = dict(zip(order, values[:n]))
            enabled = [m for m, on in zip(order, values[n:2 * n]) if on]
            rate_value, seed_value, row_id = values[2 * n:]
            try:
                out = session.run(inputs, enabled, rate_value, int(seed_value or DEFAULT_SEED), row_id)
            except USER_ERRORS as err:
                return _page_error(error_message(err), inputs), "", "", None, None
            except Exception as err:  # a bug: one line in the page, the traceback in the server's log
                logger.exception("demo: prediction failed")
                return _page_error(f"{type(err).__name__}: {error_message(err)}", inputs), "", "", None, None
            frame = pd.DataFrame([{"model": r["model"], "modalities": r["modalities"], y_name: round(r["score"], 4),
                                   "label": r["label"]} for r in out["subsets"]])
            bars = frame.assign(bar=[f"{r['modalities']} {r['model']}" if session.teacher else r["modalities"]
                                     for r in out["subsets"]])  # side by side, not stacked
            teacher_text = answer_text(out["teacher"]) if out["teacher"] else ""
            return "", answer_text(out["student"]), teacher_text, bars, frame

        submit.click(on_submit, [*widgets.values(), *[switches[m] for m in order], rate, seed, example_id],
                     [error, student_box, teacher_box, chart, table])

        if rows is not None:
            def on_pick(choice):
                if not choice or choice == NO_EXAMPLE:
                    return (None, "", *[gr.update() for _ in order])
                inputs, row_id, truth_text = session.example(choice)
                return (row_id, truth_text, *[inputs.get(m) for m in order])

            picker.change(on_pick, [picker], [example_id, truth, *widgets.values()])
    demo.session = session  # the handlers' state, for tests and scripts
    return demo


def launch(checkpoint, teacher=None, dataset=None, split: str = "test", port: int | None = None,
           host: str = "127.0.0.1") -> None:
    """Build the app and serve it on `host:port` (blocking) until interrupted."""
    demo = build_app(checkpoint, teacher=teacher, dataset=dataset, split=split)
    demo.launch(server_name=host, server_port=port, share=False, show_error=False, quiet=False)


# ------------------------------------------------------------------------------------------------ the Space


def space_files(repo_id: str, model_name: str | None = None) -> dict[str, str]:
    """{file name: text} of a Gradio Space that serves the published checkpoint `repo_id` with this app, loaded
    by its Hub id with the code it ships (`trust_remote_code=True`): `app.py`, `requirements.txt` (hf_mmkd's own
    requirements and gradio) and `README.md` with the Space's front matter (`sdk: gradio`)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    model_name = model_name or repo_id.split("/")[-1]
    app = (f'"""Gradio Space of {repo_id}: the `hf-mmkd demo` app (hf_mmkd/demo_app.py), loading the model by its '
           f'Hub id with its own code."""\n\n'
           "from hf_mmkd.demo_app import build_app\n\n"
           f"demo = build_app({repo_id!r}, trust_remote_code=True)\n\n"
           'if __name__ == "__main__":\n'
           "    demo.launch()\n")
    try:
        gradio_version = version("gradio")  # the version this app was tested with
    except PackageNotFoundError:
        gradio_version = None
    base = [r for r in (requires("hf_mmkd") or []) if "extra ==" not in r]
    requirements = "\n".join([*base, f"gradio>={gradio_version or '6'}"]) + "\n"
    readme = ("---\n"
              f"title: {model_name}\n"
              "sdk: gradio\n"
              + (f"sdk_version: {gradio_version}\n" if gradio_version else "")
              + "app_file: app.py\n"
              f"models:\n- {repo_id}\n"
              "tags:\n- hf_mmkd\n- multimodal\n- sentiment-analysis\n- missing-modalities\n"
              "---\n\n"
              f"# {model_name}\n\n"
              f"Try [{repo_id}](https://huggingface.co/{repo_id}): type a transcript or upload the model's inputs, "
              "switch modalities off, raise the missing rate, and watch the answer move. This is the "
              "`hf-mmkd demo` app of hf_mmkd, whose source is included here (`hf_mmkd/`).\n")
    return {"app.py": app, "requirements.txt": requirements, "README.md": readme}


def package_files() -> dict[str, Path]:
    """{path inside a Space: source file} of the installed hf_mmkd package (its .py files and card template),
    laid out as an importable `hf_mmkd/` folder, so that the Space runs the same code as `hf-mmkd demo`."""
    import importlib

    out = {}
    for name in ("hf_mmkd", "hf_mmkd.modeling", "hf_mmkd.model_cards", "hf_mmkd.data", "hf_mmkd.distillation",
                 "hf_mmkd.metrics_module.mmsa_sentiment"):
        folder = Path(list(importlib.import_module(name).__path__)[0])
        for src in sorted(folder.iterdir()):
            if src.is_file() and src.suffix in (".py", ".md"):
                out[str(Path(*name.split("."), src.name))] = src
    return out


def write_space(repo_id: str, folder: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write `space_files(repo_id)` into `folder` (a fresh temporary folder of the caller) and return {name in the
    release: file} for them and `package_files()`, names under `prefix` (`hub.publish(space=True)` passes
    "space")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=False)
    out = {}
    for name, text in space_files(repo_id).items():
        (folder / name).write_text(text, encoding="utf-8")
        out[name] = folder / name
    out.update(package_files())
    return {str(Path(prefix, name)): path for name, path in out.items()}
