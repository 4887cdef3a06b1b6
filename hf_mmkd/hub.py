"""Publishing: a model card whose `model-index` holds the robustness numbers, a release folder, an upload.

Three steps, split so that everything but the last runs offline and is tested (the Hub is never needed to test it):

1. `build_card(results, checkpoint, ...)` renders `model_cards/mmkd.md` with `huggingface_hub.ModelCard`; the
   card data carry one `EvalResult` per (dataset, protocol, condition, metric), the condition and protocol in
   `metric_config` ("p2 r=0.5", "p3 available={l,v}", "p1 AUILC").
2. `build_release_dir(checkpoint_dir, out_dir, card, extra_files)` copies what the Hub repo needs into a fresh
   folder, written atomically (temporary folder next to it, then a rename).
3. `upload(release_dir, repo_id)` = `HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`.

`results` is the structure documented in `hf_mmkd.report` (dataset, protocol, checkpoints -> seeds ->
conditions -> metrics); a list of them (several datasets or protocols) is accepted too.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_mmkd.checkpoints import check_repo_id
from hf_mmkd.io import MANIFEST, OutputFolder, read_json
from hf_mmkd.metrics import parse_condition, rate_condition
from hf_mmkd.report import DATASET_NAMES, METRIC_NAMES, markdown_table, summarize

__all__ = [
    "METHODS",
    "TRAINING_SUMMARY",
    "dataset_section",
    "method_section",
    "portable_name",
    "PROCESSOR_FILES",
    "build_card",
    "build_release_dir",
    "check_hub_access",
    "check_repo_id",
    "default_template_path",
    "dummy_inputs",
    "eval_results",
    "publish",
    "upload",
    "verify_release",
]

PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "preprocessor_config.json",
    "processor_config.json", "feature_extractor_config.json", "video_preprocessor_config.json",
)

_METRIC_TYPES = {  # MMSA key -> model-index metric type
    "Has0_acc_2": "accuracy", "Non0_acc_2": "accuracy", "Mult_acc_2": "accuracy", "Mult_acc_3": "accuracy",
    "Mult_acc_5": "accuracy", "Mult_acc_7": "accuracy", "Accuracy": "accuracy", "WA": "accuracy",
    "UA": "recall", "Has0_F1_score": "f1", "Non0_F1_score": "f1", "F1_score": "f1", "MAE": "mae",
    "Corr": "pearsonr", "Sign_acc_2": "accuracy", "Sign_F1_score": "f1", "Band_acc_3": "accuracy",
    "Has0_bal_acc_2": "balanced_accuracy", "Non0_bal_acc_2": "balanced_accuracy", "Mult_bal_acc_2": "balanced_accuracy",
    "Sign_bal_acc_2": "balanced_accuracy", "Balanced_acc": "balanced_accuracy", "Macro_F1": "f1",
}

TRAINING_SUMMARY = "training_summary.json"  # written by train.py next to each checkpoint; read by the card

_TERMS = """\
**Terms.** This repository contains model weights and code; it does **not** contain or redistribute any of the
training data, its features or its transcripts. The weights were trained on the data set named above and inherit
its terms: check them before any use outside research."""


def dataset_section(spec: Mapping[str, Any] | None) -> dict[str, str]:
    """The card's parts that describe the training data and what the outputs mean, from the checkpoint's
    `config.dataset_spec` (`hf_mmkd.data.spec`): template variables `data_provenance` (training data, label
    meaning, modalities, rows per split, provenance, terms), `task_description`, `output_description` and
    `metrics_description`. Without a spec, the card says that the training data are not recorded."""
    from hf_mmkd.data.spec import METRIC_SETS, DatasetSpec, spec_markdown

    if spec is None:
        return {"data_provenance": "The training data of this checkpoint are not recorded (its config has no "
                                   "`dataset_spec`).\n\n" + _TERMS,
                "task_description": "prediction", "output_description": "the head's outputs",
                "metrics_description": "Metrics: see the table titles."}
    spec = DatasetSpec.from_dict(spec, where="config.json: dataset_spec")
    if spec.task == "classification":
        task = f"classification into {spec.label_description}"
        output = f"(B, {spec.num_labels}) class logits, classes in id order: {', '.join(spec.class_names)}"
    else:
        a, b = spec.neutral_band
        task = f"regression ({spec.label_description})"
        output = (f"(B, 1) scores on the scale [{spec.label_range[0]:g}, {spec.label_range[1]:g}]; "
                  f"predict() calls a score in [{a:g}, {b:g}] neutral")
    body = spec_markdown(spec).split("\n", 2)[2]  # without its heading: the card's section has its own
    provenance = f"Trained on **{spec.name}**.\n\n{body}\n{_TERMS}\n"
    return {"data_provenance": provenance, "task_description": task, "output_description": output,
            "metrics_description": f"Metrics (metric set `{spec.metric_set}`): {METRIC_SETS[spec.metric_set]}."}


# method -> (name and paper, what the student is trained with, docs anchor)
METHODS = {
    "none": ("No distillation (baseline)", "the task loss only, on the missing-modality view", "baselines"),
    "logit": ("Logit KD (Hinton et al., 2015; baseline)",
              "task loss + `loss_logit`: MSE (or, with distance=l1, L1) to the frozen teacher's score (regression) "
              "or KL at a temperature",
              "baselines"),
    "mmckd": ("MM-CKD (Sang et al., arXiv 2410.08692; a rebuild from the abstract)",
              "task loss + `loss_mvsc`: multi-view supervised contrastive loss over the teacher and one student "
              "view per availability pattern", "mm-ckd"),
    "corrkd": ("CorrKD (Li et al., CVPR 2024, arXiv 2404.16456)",
               "task loss + `loss_scd` (sample-level contrastive), `loss_cpd` (category-guided prototypes), "
               "`loss_rcd` (response-disentangled consistency)", "corrkd"),
    "mitr": ("MITR-DNet (Wang et al., ICASSP 2025, arXiv 2501.05474)",
             "task loss + `loss_attra` (SimSiam), `loss_recon` (dropped steps), `loss_kd_tf`, `loss_kd_mib`, "
             "`loss_kd_ss`", "mitr-dnet"),
    "crossmodal": ("Cross-modal KD (Chen et al., CVPR 2023, arXiv 2306.07646; a rebuild of the losses)",
                   "task loss + `loss_nce_ts`, `loss_nce_ta` (InfoNCE), `loss_adv` (gradient reversal)",
                   "cross-modal-kd"),
}
# method -> the paper's URL (cards are read on the Hub, where the repository's docs/ paths do not resolve)
PAPERS = {"logit": "https://arxiv.org/abs/1503.02531", "mmckd": "https://arxiv.org/abs/2410.08692",
          "corrkd": "https://arxiv.org/abs/2404.16456", "mitr": "https://arxiv.org/abs/2501.05474",
          "crossmodal": "https://arxiv.org/abs/2306.07646"}
# Loss settings that only mean something for regression labels (CorrKD's label bins of a score and their width).
REGRESSION_ONLY_SETTINGS = {"label_bins", "sigma"}
_TEACHER_MODES = {"frozen": "a trained teacher, frozen", "online": "a teacher trained jointly with the student",
                  "shared": "the student itself on complete inputs (weight-shared)", "none": "none"}


def method_section(config: Mapping[str, Any], summary: Mapping[str, Any] | None) -> dict[str, str]:
    """`{"model_summary", "method_description"}` of a checkpoint from its config and `training_summary.json` (what
    train.py recorded: method, its kwargs, teacher, missing-modality protocol, epochs, validation numbers)."""
    from hf_mmkd.distillation import DISTILLATION_LOSSES

    summary = dict(summary or {})
    role = config.get("role", "student")
    method = summary.get("method") or config.get("distillation_method") or "none"
    title, terms, anchor = METHODS.get(method, (method, "see the hf_mmkd documentation", ""))
    cls = DISTILLATION_LOSSES.get(method)
    weights = {}
    if cls is not None:
        params = inspect.signature(cls.__init__).parameters.values()
        weights = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
    weights.update(summary.get("method_kwargs") or {})
    if config.get("task") == "classification":  # classes are the targets themselves: no bins of a score
        weights = {k: v for k, v in weights.items() if k not in REGRESSION_ONLY_SETTINGS}
    shown = ", ".join(f"{k}={v}" for k, v in weights.items() if v is not None) or "none"
    mode = getattr(cls, "teacher_mode", "none")
    teacher = _teacher_line(summary) if summary.get("teacher") else _TEACHER_MODES.get(mode, mode)
    protocol = summary.get("missing_protocol", "unknown")
    if summary.get("missing_rate") is not None:
        protocol += f" (rate {summary['missing_rate']})"
    if summary.get("train_missing_rates"):
        protocol += f" (one rate per row, every modality, from {summary['train_missing_rates']})"
    validation = summary.get("validation") or {}
    lines = []
    if role == "teacher":
        lines.append("- **Stage**: teacher, trained on complete inputs with the task loss only (no distillation).")
    else:
        paper = f" Paper: {PAPERS[method]}." if method in PAPERS else ""
        lines += [f"- **Method**: {title}. Loss: {terms}.{paper} This implementation's formulas: section "
                  f"`{anchor}` of docs/methods.md in the hf_mmkd source.",
                  f"- **Term weights and settings**: {shown}.",
                  f"- **Teacher**: {teacher} (teacher mode `{mode}`).",
                  f"- **Missing-modality training protocol** (student view): {protocol}; see docs/protocols.md."]
        shaping = []
        if summary.get("teacher_folds"):
            shaping.append(f"cross-fitted teacher ({summary['teacher_folds']} folds: each training row's response "
                           "from a teacher that never saw it)")
        if summary.get("balance_terms"):
            shaping.append(f"term gradients capped at {summary.get('balance_ratio')} x the task's")
        if summary.get("recoverability_floor") is not None:
            shaping.append(f"rows weighted by recoverability (floor {summary['recoverability_floor']})")
        if summary.get("recoverability_fallback"):
            shaping.append(f"rows that keep little pulled towards the neutral answer (weight "
                           f"{summary['recoverability_fallback']})")
        if summary.get("response_weight"):
            shaping.append(f"the teacher's answer distilled beside the method's terms (logit-KD term, weight "
                           f"{summary['response_weight']})")
        if shaping:
            lines.append("- **Shared distillation machinery** (`docs/methods.md#shared-machinery`): "
                         + "; ".join(shaping) + ".")
    for key, label in (("num_train_epochs", "Epochs"), ("learning_rate", "Learning rate"), ("seed", "Seed")):
        if summary.get(key) is not None:
            lines.append(f"- **{label}**: {summary[key]}")
    if validation:
        lines.append("- **Validation** (" + summary.get("validation_note", "validation split") + "): "
                     + ", ".join(f"{k} {v:.4g}" for k, v in validation.items()))
    lines.append("- **Load**: `AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True)` or "
                 "`pipeline(model=repo, trust_remote_code=True)` (see \"How to use\").")
    what = "teacher (complete inputs)" if role == "teacher" else f"student distilled with {title}"
    head = f"A multimodal sentiment {what}, missing-modality training protocol {protocol if role != 'teacher' else 'none'}"
    if validation:
        first = next(iter(validation.items()))
        head += f"; validation {first[0]} {first[1]:.4g}"
    return {"model_summary": head + ".", "method_description": "\n".join(lines)}


def _teacher_line(summary: Mapping[str, Any]) -> str:
    """The teacher as the card names it: its Hub id, or the local folder it was read from, with its validation
    figure (recorded by train.py from the teacher's own training summary)."""
    name = summary["teacher"]
    where = summary.get("teacher_location") or name
    text = f"`{where}`" + ("" if where == name else f" (`{name}`)")
    validation = summary.get("teacher_validation") or {}
    if validation:
        key, value = next(iter(validation.items()))
        text += f", validation {key} {value:.4g}"
    return text


def portable_name(name_or_path: str | os.PathLike | None) -> str | None:
    """A name that means the same on every machine: a Hub id stays, a local folder becomes its own name (an
    absolute path would leak the training machine's layout into config.json and the card)."""
    if name_or_path is None:
        return None
    text = str(name_or_path)
    if os.path.isabs(text) or text.startswith((".", "~")) or os.path.exists(text):
        return Path(text).resolve().name
    return text


_DEFAULT_TAGS = ["hf_mmkd", "custom_code", "multimodal", "sentiment-analysis", "missing-modalities",
                 "knowledge-distillation"]

# ------------------------------------------------------------------------------------------------ card


def default_template_path() -> Path:
    """The card template `mmkd.md` of the repository's `model_cards/`, installed as `hf_mmkd.model_cards`."""
    path = Path(str(resources.files("hf_mmkd.model_cards").joinpath("mmkd.md")))
    if not path.is_file():
        raise FileNotFoundError(f"model card template not found at {path}; reinstall hf_mmkd or pass template_path")
    return path


def _as_list(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [results] if isinstance(results, Mapping) else list(results)


def _metric_config(protocol: str, label: str, is_summary: bool) -> str:
    if is_summary:
        return f"{protocol} {label}"
    kind, value = parse_condition(label)
    return f"{protocol} {rate_condition(value)}" if kind == "rate" else f"{protocol} available={value}"


def eval_results(results: Mapping[str, Any] | Sequence[Mapping[str, Any]], checkpoint: str, *,
                 dataset_types: Mapping[str, str] | None = None, task_type: str = "text-classification",
                 include_summary: bool = True, digits: int = 4) -> list[EvalResult]:
    """One `EvalResult` per (dataset, protocol, condition, metric) of `checkpoint`, the value being the seed mean.

    `metric_config` is "<protocol> <condition>" ("p2 r=0.5", "p3 available={l,v}") or, for the protocol summary,
    "<protocol> <summary>" ("p1 AUILC", "p2 mean r=0.0-0.9", "p3 Avg. (6 sets)"). `metric_args` keeps the std
    over seeds and the number of seeds. `dataset_types` maps dataset keys to Hub dataset ids (default: the key).
    """
    out = []
    for res in _as_list(results):
        summary = summarize(res)
        if checkpoint not in summary:
            raise KeyError(f"checkpoint {checkpoint!r} not in the {res['dataset']}/{res['protocol']} results; "
                           f"have {sorted(summary)}")
        s = summary[checkpoint]
        ds = str(res["dataset"])
        protocol = str(res["protocol"]).lower()
        rows = [(c, row, False) for c, row in s["conditions"].items()]
        if include_summary:
            rows += [(label, row, True) for label, row in s["summary"].items()]
        for label, row, is_summary in rows:
            for metric, cell in row.items():
                out.append(EvalResult(
                    task_type=task_type,
                    task_name="Multimodal sentiment analysis with missing modalities",
                    dataset_type=(dataset_types or {}).get(ds, ds),
                    dataset_name=DATASET_NAMES.get(ds.lower(), ds),
                    dataset_split=str(res.get("split", "test")),
                    metric_type=_METRIC_TYPES.get(metric, metric.lower()),
                    metric_name=METRIC_NAMES.get(metric, metric),
                    metric_value=round(float(cell["mean"]), digits),
                    metric_config=_metric_config(protocol, label, is_summary),
                    metric_args={"std": round(float(cell["std"]), digits), "seeds": int(cell["n"])},
                ))
    return out


def _inputs_table(config: Mapping[str, Any]) -> dict[str, Any]:
    """Template variables describing the inputs per modality, from a config.json dict: a Markdown table and
    usage code whose missing-modality examples drop one of the model's own modalities."""
    rows = ["| Modality | Encoder | Model inputs |", "|---|---|---|"]
    usage, batch, present, example = ["inputs = {"], 2, [], []
    backbone_inputs = {"text": ("input_ids", "attention_mask"), "audio": ("input_values", "audio_attention_mask"),
                       "vision": ("pixel_values", "frame_mask")}
    for m in ("text", "audio", "vision"):
        sub, dim = config.get(f"{m}_config"), config.get(f"{m}_feature_dim")
        if sub:
            name = portable_name(sub.get("_name_or_path")) or sub.get("model_type", "backbone")
            main, mask = backbone_inputs[m]
            rows.append(f"| {m} | `{name}` backbone | `{main}`, `{mask}` (from the processor) |")
            usage.append(f"    # {main!r}: ..., {mask!r}: ...,  (from the processor)")
            present.append((m, (main, mask)))
            example.append({"text": '"text": "it was really good"', "audio": '"audio": "clip.wav"',
                            "vision": '"video": "clip.mp4"'}[m])
        elif dim:
            rows.append(f"| {m} | {dim}-d feature sequence | `{m}_features` (B, L, {dim}), `{m}_lengths` (B,) |")
            usage.append(f"    \"{m}_features\": torch.randn({batch}, 20, {dim}), "
                         f"\"{m}_lengths\": torch.full(({batch},), 20),")
            present.append((m, (f"{m}_features", f"{m}_lengths")))
            example.append(f'"{m}_features": [[0.0] * {dim}] * 20')
        else:
            rows.append(f"| {m} | none (not used by this model) | - |")
    usage.append("}")
    dropped, dropped_keys = present[-1] if present else ("audio", ("audio_features", "audio_lengths"))
    mask_row = [any(m == p for p, _ in present) and m != dropped for m in ("text", "audio", "vision")]
    return dict(inputs_table="\n".join(rows), usage_inputs="\n".join(usage), usage_batch=batch,
                pipeline_example="{" + ", ".join(example) + "}",
                usage_dropped=dropped, usage_dropped_keys=repr(tuple(dropped_keys)),
                usage_mask=repr([mask_row] * batch))


def _hyperparameters_table(hp: Mapping[str, Any] | None) -> str:
    if not hp:
        return ""
    lines = ["| Hyper-parameter | Value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in hp.items()]
    return "\n".join(lines)


def build_card(results: Mapping[str, Any] | Sequence[Mapping[str, Any]], checkpoint: str, *, repo_id: str,
               config: Mapping[str, Any] | str | os.PathLike | None = None, model_name: str | None = None,
               model_summary: str | None = None, method: str = "knowledge distillation",
               method_description: str | None = None, method_citation: str = "see docs/methods.md of hf_mmkd.",
               hyperparameters: Mapping[str, Any] | None = None, summary: Mapping[str, Any] | None = None,
               plot_filename: str | None = None, base_model: str | list[str] | None = None,
               datasets: list[str] | None = None, dataset_types: Mapping[str, str] | None = None,
               license: str = "apache-2.0", tags: Iterable[str] = (), data_provenance: str | None = None,
               template_path: str | os.PathLike | None = None, **template_vars: Any) -> ModelCard:
    """Render the model card of `checkpoint` (a key of `results["checkpoints"]`).

    `config` is the checkpoint's config.json (dict or path); it fills the inputs table, the role, and from its
    `dataset_spec` the training data, the label meaning and the metric names (`dataset_section`);
    `data_provenance` replaces the training-data section's text. `summary` is the checkpoint's
    `training_summary.json` (train.py writes it); with the config it fills the summary and the method section
    (`method_section`) unless `model_summary` / `method_description` are given. `plot_filename` is the plot's name
    inside the release folder (pass the file to `build_release_dir`).
    Extra keyword arguments reach the Jinja template.
    """
    if isinstance(config, (str, os.PathLike)):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    config = dict(config or {})
    results_list = _as_list(results)
    model_name = model_name or repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name="transformers",
        tags=_DEFAULT_TAGS + [t for t in tags if t not in _DEFAULT_TAGS],
        datasets=datasets,
        base_model=base_model,
        # no results: no model-index at all (an empty `results: []` block is not a valid model-index)
        eval_results=eval_results(results_list, checkpoint, dataset_types=dataset_types) or None,
    )
    # Each table with what its evaluation warned and noted (a one-class predictor, rows or sets left out): the
    # model-index alone would read as a full result.
    tables = "\n".join(markdown_table(r) + "".join(f"\n**Warning:** {w}\n" for w in r.get("warnings") or [])
                       + "".join(f"\n*Note:* {n}\n" for n in r.get("notes") or []) for r in results_list)
    data = dataset_section(config.get("dataset_spec"))
    described = method_section(config, summary)
    if data_provenance is not None:
        data["data_provenance"] = data_provenance
    variables = dict(
        model_name=model_name, repo_id=repo_id,
        model_summary=described["model_summary"] if model_summary is None else model_summary,
        role=config.get("role", "sentiment"), method=config.get("distillation_method") or method,
        training_description=("trained on complete inputs with the task loss only, as the teacher that students "
                              "are distilled from" if config.get("role") == "teacher" else
                              f"trained by knowledge distillation ({config.get('distillation_method') or method})"),
        **_inputs_table(config), **data,
        method_description=described["method_description"] if method_description is None else method_description,
        hyperparameters_table=_hyperparameters_table(hyperparameters),
        results_markdown=tables or "No test-set evaluation was attached to this card (see the validation numbers "
                                   "above; `hf-mmkd evaluate` + `hf-mmkd publish --results` add them).",
        plot_filename=plot_filename, method_citation=method_citation,
    )
    variables.update(template_vars)
    return ModelCard.from_template(card_data, template_path=str(template_path or default_template_path()),
                                   **variables)


# --------------------------------------------------------------------------------------- release folder


def _check_checkpoint(ckpt: Path) -> tuple[list[Path], dict[str, Any]]:
    """The weight files of a checkpoint folder and its config; errors name the missing file."""
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint folder {ckpt} does not exist")
    config_path = ckpt / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} is missing config.json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    index = ckpt / "model.safetensors.index.json"
    if (ckpt / "model.safetensors").is_file():
        weights = [ckpt / "model.safetensors"]
    elif index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        missing = [s for s in shards if not (ckpt / s).is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint {ckpt} is missing weight shard(s) {missing} listed in {index.name}")
        weights = [index] + [ckpt / s for s in shards]
    else:
        other = sorted(p.name for p in ckpt.glob("pytorch_model*.bin"))
        hint = f" (found {other}: save with safetensors)" if other else ""
        raise FileNotFoundError(f"checkpoint {ckpt} is missing model.safetensors{hint}")
    auto_map = config.get("auto_map")
    if not auto_map:
        raise ValueError(f"{config_path} has no auto_map: the Hub copy could not be loaded with "
                         f"trust_remote_code=True (register the classes with register_for_auto_class)")
    for ref in auto_map.values():
        for r in ([ref] if isinstance(ref, str) else [x for x in ref if x]):
            parts = str(r).split("--")[-1].split(".")
            if len(parts) != 2 or not all(p.isidentifier() for p in parts):  # "../x/modeling_mmkd.Cls", "a.b.C"
                raise ValueError(f"{config_path}: auto_map entry {r!r} must be MODULE.CLASS with MODULE a .py file "
                                 "in the checkpoint folder itself (no path outside it)")
            module = parts[0]
            if not (ckpt / f"{module}.py").is_file():
                raise FileNotFoundError(f"checkpoint {ckpt} is missing {module}.py, named in auto_map ({r})")
    return weights, config


def _image_refs(text: str) -> list[str]:
    """Relative image paths a Markdown card embeds (`![alt](name.png)`)."""
    refs = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text)
    return [r for r in refs if "://" not in r and not r.startswith("data:")]


def dummy_inputs(config) -> dict[str, Any]:
    """One small input row for every encoder of a model `config` (features, tokens, waveform or frames)."""
    import torch

    g = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {}
    for m in ("text", "audio", "vision"):
        kind = config.encoder_kind(m)
        if kind == "features":
            batch[f"{m}_features"] = torch.randn(1, 4, getattr(config, f"{m}_feature_dim"), generator=g)
            batch[f"{m}_lengths"] = torch.tensor([4])
        elif kind == "backbone" and m == "text":
            vocab = getattr(config.text_config, "vocab_size", 100)
            batch["input_ids"] = torch.randint(min(5, vocab - 1), vocab, (1, 8), generator=g)
            batch["attention_mask"] = torch.ones(1, 8, dtype=torch.long)
        elif kind == "backbone" and m == "audio":
            batch["input_values"] = torch.randn(1, 4000, generator=g)
            batch["audio_attention_mask"] = torch.ones(1, 4000, dtype=torch.long)
        elif kind == "backbone":
            size = getattr(config.vision_config, "image_size", 224)
            size = size if isinstance(size, int) else size[0]
            channels = getattr(config.vision_config, "num_channels", 3)
            batch["pixel_values"] = torch.randn(1, 2, channels, size, size, generator=g)
            batch["frame_mask"] = torch.ones(1, 2, dtype=torch.bool)
    return batch


def verify_release(folder: str | os.PathLike) -> None:
    """Load a release folder with the code it ships (the class its config's `auto_map` names, imported from the
    folder as `trust_remote_code=True` does) and run it on a dummy input; a ValueError says what fails.

    Catches a truncated weight file, a config that does not match its weights, and shipped code that does not
    load or run, before anything is written to the final location or uploaded.
    """
    import torch
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from hf_mmkd.inference import load_model

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    try:
        model_class = get_class_from_dynamic_module(config["auto_map"]["AutoModelForSequenceClassification"], folder)
    except Exception as err:  # anything at all: the shipped code does not import
        raise ValueError(f"the release's code does not load ({type(err).__name__}: {err})") from None
    try:
        model = load_model(folder, device="cpu", model_class=model_class)
    except ValueError as err:  # name the release, not its temporary folder
        raise ValueError(f"the release does not load: {str(err).replace(str(folder), 'the release folder')}") from None
    try:
        with torch.no_grad():
            logits = model(**dummy_inputs(model.config)).logits
    except Exception as err:  # anything at all: the release does not run as shipped
        raise ValueError(f"the release does not run on a dummy input ({type(err).__name__}: {err})") from None
    if logits.shape[0] != 1 or not torch.isfinite(logits).all():
        raise ValueError(f"the release gives no finite prediction on a dummy input (logits {logits.tolist()})")


def build_release_dir(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, card: ModelCard | str,
                      extra_files: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] | None = None,
                      overwrite: bool = False, verify: Callable[[Path], None] | None = None,
                      command: str = "build_release_dir") -> Path:
    """Assemble the Hub repository content of a checkpoint in a fresh folder `out_dir`; return its path.

    Copies the safetensors weights (or shards + index), config.json (it must carry `auto_map`, and each module it
    names must be present), every top-level `.py` file (configuration/modeling code), processor files that exist
    (`PROCESSOR_FILES`), the card as README.md, and `extra_files` (the plot, results JSON...; a mapping gives
    the names in the release). Refuses a checkpoint missing its weights or config, a card embedding an image that
    is not shipped, and an `out_dir` that the output-folder guard refuses (`hf_mmkd.io.OutputFolder`: it holds
    the checkpoint or an extra file, or it is not empty without `overwrite`, or it holds files hf_mmkd did not
    write). Written to a temporary sibling folder; `verify(folder)` (e.g. `verify_release`) runs on it before it
    is renamed into place, so `out_dir` is never half-written nor holds a release that does not work.
    """
    ckpt = Path(checkpoint_dir)
    weights, _ = _check_checkpoint(ckpt)
    if isinstance(extra_files, Mapping):
        extras = {str(k): Path(v) for k, v in extra_files.items()}
    else:
        extras = {Path(p).name: Path(p) for p in (extra_files or [])}
    for name, src in extras.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"extra file name {name!r} must be a relative path inside the release")
        if not src.is_file():
            raise FileNotFoundError(f"extra file {src} does not exist")
    card_text = str(card) if isinstance(card, ModelCard) else card
    files = {p.name: p for p in weights}
    files["config.json"] = ckpt / "config.json"
    files.update({p.name: p for p in sorted(ckpt.glob("*.py"))})
    files.update({n: ckpt / n for n in PROCESSOR_FILES + (TRAINING_SUMMARY,) if (ckpt / n).is_file()})
    files.update(extras)
    missing = [r for r in _image_refs(card_text) if r not in files]
    if missing:
        raise FileNotFoundError(f"the card embeds {missing}, which are not among the release files; "
                                f"pass them in extra_files")
    guard = OutputFolder(out_dir, command, inputs=[ckpt, *extras.values()], overwrite=overwrite,
                         flag="release folder")
    with guard.write() as tmp:
        for name, src in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / name)
        (tmp / "README.md").write_text(card_text, encoding="utf-8")
        if verify is not None:
            verify(tmp)
    return guard.path


# ---------------------------------------------------------------------------------------------- upload


def upload(release_dir: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
           commit_message: str = "Upload hf_mmkd model", space: bool = False) -> Any:
    """Create the model repo if needed and upload the release folder in one commit; returns the commit info.
    With `space`, the release's `space/` folder goes to the Gradio Space `<repo_id>-demo` (not the model repo)."""
    release = Path(release_dir)
    for required in ("README.md", "config.json"):
        if not (release / required).is_file():
            raise FileNotFoundError(f"release folder {release} is missing {required}; build it with build_release_dir")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(release), repo_type="model",
                               commit_message=commit_message,
                               ignore_patterns=[MANIFEST, *(["space/*"] if space else [])])
    if space:
        api.create_repo(repo_id=f"{repo_id}-demo", repo_type="space", space_sdk="gradio", private=private,
                        exist_ok=True)
        api.upload_folder(repo_id=f"{repo_id}-demo", folder_path=str(release / "space"), repo_type="space",
                          commit_message=commit_message, ignore_patterns=[MANIFEST])
    return commit


def check_hub_access(token: str | None = None) -> str:
    """Fail fast, in one line, before any work when an upload cannot succeed: `HF_HUB_OFFLINE` is set, there is no
    token (`token`, else `HF_TOKEN` / the `hf auth login` one), or the Hub (`HF_ENDPOINT`) does not answer or does
    not accept the token. Returns the account name the token belongs to."""
    from huggingface_hub import constants, get_token

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise ValueError("HF_HUB_OFFLINE is set: cannot upload to the Hub offline (unset it, or build the release "
                         "folder only with --dry-run --out DIR)")
    token = token or get_token()
    if not token:
        raise ValueError(f"no Hugging Face token: log in with `hf auth login`, set HF_TOKEN or pass --token "
                         f"(needed to upload to {endpoint})")
    try:
        return HfApi(token=token).whoami()["name"]
    except Exception as err:  # connection refused, DNS, timeout, 401: all mean "cannot upload"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"the Hub at {endpoint} is not reachable with this token ({type(err).__name__}: "
                         f"{reason[:200]})") from None


def _upload_release(out: Path, repo_id: str, kept: bool, **upload_kwargs) -> Any:
    """`upload`, but a failure says where the built release folder is (or that it was temporary)."""
    try:
        return upload(out, repo_id, **upload_kwargs)
    except Exception as err:
        where = (f"the release folder is kept at {out}; upload it later with `hf upload {repo_id} {out}`" if kept
                 else "the release folder was temporary; pass --out DIR to keep it")
        reason = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"upload to {repo_id} failed ({type(err).__name__}: {reason[:200]}); {where}") from None


# --------------------------------------------------------------------------------------------- publish


def publish(checkpoint_dir: str | os.PathLike, repo_id: str, *,
            results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
            checkpoint_name: str | None = None, plot: str | os.PathLike | None = None,
            extra_files: Iterable[str | os.PathLike] = (), release_dir: str | os.PathLike | None = None,
            overwrite: bool = False, dry_run: bool = False, private: bool | None = False, token: str | None = None,
            commit_message: str = "Upload hf_mmkd model", space: bool = False,
            **card_kwargs: Any) -> tuple[Path | None, Any]:
    """The whole release path, shared by `hf-mmkd publish` and `train.py --push_to_hub`.

    Renders the card (`build_card`; a `model-index` from `results` when given, the robustness `plot` embedded when
    given), assembles the release folder (`build_release_dir`: weights, config, code, processor files, card, plot,
    `extra_files`) and uploads it (`upload`) unless `dry_run`. `checkpoint_name` is the checkpoint's key in
    `results["checkpoints"]` (default: the only one). `release_dir` keeps the folder (required for a dry run);
    without it a temporary folder is used and removed after the upload. `space=True` adds a Gradio Space to the
    release folder (`space/`: `hf_mmkd.demo_app.write_space`, the `hf-mmkd demo` app loading `repo_id` with its
    own code), left out of the model upload and uploaded to the Space `<repo_id>-demo`. Returns `(release folder
    or None, commit info or None)`.
    """
    ckpt = Path(checkpoint_dir)
    check_repo_id(repo_id)
    if dry_run and release_dir is None:
        raise ValueError("a dry run needs a release folder to write (release_dir / --out)")
    results_list = [] if results is None else _as_list(results)
    if results_list and checkpoint_name is None:
        names = sorted({n for r in results_list for n in r.get("checkpoints", {}) if n != r.get("reference")})
        if len(names) != 1:
            raise ValueError(f"the results hold checkpoints {names}: say which one is {ckpt} (checkpoint_name)")
        checkpoint_name = names[0]
    _, config = _check_checkpoint(ckpt)  # fail on an incomplete checkpoint before rendering anything
    from hf_mmkd.inference import load_model

    load_model(ckpt, device="cpu")  # a truncated weight file, a config that does not match the weights: named now
    if (ckpt / TRAINING_SUMMARY).is_file() and "summary" not in card_kwargs:
        card_kwargs["summary"] = read_json(ckpt / TRAINING_SUMMARY)
    extras = {Path(p).name: Path(p) for p in extra_files}
    if plot is not None:
        extras[Path(plot).name] = Path(plot)
    card = build_card(results_list, checkpoint_name or ckpt.name, repo_id=repo_id, config=config,
                      plot_filename=Path(plot).name if plot is not None else None, **card_kwargs)
    upload_kwargs = dict(token=token, private=private, commit_message=commit_message, space=space)
    with tempfile.TemporaryDirectory(prefix="hf_mmkd_release_") as tmp:
        if space:
            from hf_mmkd.demo_app import write_space

            extras.update(write_space(repo_id, Path(tmp) / "space", prefix="space"))
        if release_dir is not None:
            out = build_release_dir(ckpt, release_dir, card, extra_files=extras, overwrite=overwrite,
                                    verify=verify_release, command="publish")
            return out, (None if dry_run else _upload_release(out, repo_id, True, **upload_kwargs))
        out = build_release_dir(ckpt, Path(tmp) / "release", card, extra_files=extras, verify=verify_release,
                                command="publish")
        return None, _upload_release(out, repo_id, False, **upload_kwargs)
