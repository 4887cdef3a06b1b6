"""Publishing: a model card whose `model-index` holds the robustness numbers, a release folder, an upload.

Three steps, split so that everything but the last runs offline and is tested (see hf-conventions §5):

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

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_mmkd.io import atomic_folder
from hf_mmkd.metrics import parse_condition, rate_condition
from hf_mmkd.report import DATASET_NAMES, METRIC_NAMES, markdown_table, summarize

__all__ = [
    "PROCESSOR_FILES",
    "build_card",
    "build_release_dir",
    "dataset_section",
    "default_template_path",
    "eval_results",
    "publish",
    "upload",
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
}

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
    usage, batch, present = ["inputs = {"], 2, []
    backbone_inputs = {"text": ("input_ids", "attention_mask"), "audio": ("input_values", "audio_attention_mask"),
                       "vision": ("pixel_values", "frame_mask")}
    for m in ("text", "audio", "vision"):
        sub, dim = config.get(f"{m}_config"), config.get(f"{m}_feature_dim")
        if sub:
            name = sub.get("_name_or_path") or sub.get("model_type", "backbone")
            main, mask = backbone_inputs[m]
            rows.append(f"| {m} | `{name}` backbone | `{main}`, `{mask}` (from the processor) |")
            usage.append(f"    # {main!r}: ..., {mask!r}: ...,  (from the processor)")
            present.append((m, (main, mask)))
        elif dim:
            rows.append(f"| {m} | {dim}-d feature sequence | `{m}_features` (B, L, {dim}), `{m}_lengths` (B,) |")
            usage.append(f"    \"{m}_features\": torch.randn({batch}, 20, {dim}), "
                         f"\"{m}_lengths\": torch.full(({batch},), 20),")
            present.append((m, (f"{m}_features", f"{m}_lengths")))
        else:
            rows.append(f"| {m} | none (not used by this model) | - |")
    usage.append("}")
    dropped, dropped_keys = present[-1] if present else ("audio", ("audio_features", "audio_lengths"))
    mask_row = [any(m == p for p, _ in present) and m != dropped for m in ("text", "audio", "vision")]
    return dict(inputs_table="\n".join(rows), usage_inputs="\n".join(usage), usage_batch=batch,
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
               model_summary: str = "", method: str = "knowledge distillation", method_description: str = "",
               method_citation: str = "see the hf_mmkd README.", hyperparameters: Mapping[str, Any] | None = None,
               plot_filename: str | None = None, base_model: str | list[str] | None = None,
               datasets: list[str] | None = None, dataset_types: Mapping[str, str] | None = None,
               license: str = "apache-2.0", tags: Iterable[str] = (), data_provenance: str | None = None,
               template_path: str | os.PathLike | None = None, **template_vars: Any) -> ModelCard:
    """Render the model card of `checkpoint` (a key of `results["checkpoints"]`).

    `config` is the checkpoint's config.json (dict or path); it fills the inputs table, the role, and from its
    `dataset_spec` the training data, the label meaning and the metric names (`dataset_section`);
    `data_provenance` replaces the training-data section's text.
    `plot_filename` is the plot's name inside the release folder (pass the file to `build_release_dir`).
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
    tables = "\n".join(markdown_table(r) for r in results_list)
    data = dataset_section(config.get("dataset_spec"))
    if data_provenance is not None:
        data["data_provenance"] = data_provenance
    variables = dict(
        model_name=model_name, repo_id=repo_id, model_summary=model_summary,
        role=config.get("role", "sentiment"), method=config.get("distillation_method") or method,
        **_inputs_table(config), **data,
        method_description=method_description, hyperparameters_table=_hyperparameters_table(hyperparameters),
        results_markdown=tables, plot_filename=plot_filename, method_citation=method_citation,
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
            module = r.split("--")[-1].rsplit(".", 1)[0]
            if not (ckpt / f"{module}.py").is_file():
                raise FileNotFoundError(f"checkpoint {ckpt} is missing {module}.py, named in auto_map ({r})")
    return weights, config


def _image_refs(text: str) -> list[str]:
    """Relative image paths a Markdown card embeds (`![alt](name.png)`)."""
    refs = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text)
    return [r for r in refs if "://" not in r and not r.startswith("data:")]


def build_release_dir(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, card: ModelCard | str,
                      extra_files: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] | None = None,
                      overwrite: bool = False) -> Path:
    """Assemble the Hub repository content of a checkpoint in a fresh folder `out_dir`; return its path.

    Copies the safetensors weights (or shards + index), config.json (it must carry `auto_map`, and each module it
    names must be present), every top-level `.py` file (configuration/modeling code), processor files that exist
    (`PROCESSOR_FILES`), the card as README.md, and `extra_files` (the plot, results JSON...; a mapping gives
    the names in the release). Refuses a checkpoint missing its weights or config, a card embedding an image that
    is not shipped, and an existing `out_dir` unless `overwrite`. Written to a temporary sibling folder, then
    renamed, so `out_dir` is never half-written.
    """
    ckpt, out = Path(checkpoint_dir), Path(out_dir)
    weights, _ = _check_checkpoint(ckpt)
    if out.exists() and not overwrite:
        raise FileExistsError(f"release folder {out} already exists; pass overwrite=True to replace it")
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
    files.update({n: ckpt / n for n in PROCESSOR_FILES if (ckpt / n).is_file()})
    files.update(extras)
    missing = [r for r in _image_refs(card_text) if r not in files]
    if missing:
        raise FileNotFoundError(f"the card embeds {missing}, which are not among the release files; "
                                f"pass them in extra_files")

    with atomic_folder(out) as tmp:
        for name, src in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / name)
        (tmp / "README.md").write_text(card_text, encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------- upload


def upload(release_dir: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False,
           commit_message: str = "Upload hf_mmkd model") -> Any:
    """Create the model repo if needed and upload the release folder in one commit; returns the commit info."""
    release = Path(release_dir)
    for required in ("README.md", "config.json"):
        if not (release / required).is_file():
            raise FileNotFoundError(f"release folder {release} is missing {required}; build it with build_release_dir")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(release), repo_type="model",
                             commit_message=commit_message)


# --------------------------------------------------------------------------------------------- publish


def publish(checkpoint_dir: str | os.PathLike, repo_id: str, *,
            results: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
            checkpoint_name: str | None = None, plot: str | os.PathLike | None = None,
            extra_files: Iterable[str | os.PathLike] = (), release_dir: str | os.PathLike | None = None,
            overwrite: bool = False, dry_run: bool = False, private: bool | None = False, token: str | None = None,
            commit_message: str = "Upload hf_mmkd model", **card_kwargs: Any) -> tuple[Path | None, Any]:
    """The whole release path, shared by `hf-mmkd publish` and `train.py --push_to_hub`.

    Renders the card (`build_card`; a `model-index` from `results` when given, the robustness `plot` embedded when
    given), assembles the release folder (`build_release_dir`: weights, config, code, processor files, card, plot,
    `extra_files`) and uploads it (`upload`) unless `dry_run`. `checkpoint_name` is the checkpoint's key in
    `results["checkpoints"]` (default: the only one). `release_dir` keeps the folder (required for a dry run);
    without it a temporary folder is used and removed after the upload. Returns `(release folder or None,
    commit info or None)`.
    """
    ckpt = Path(checkpoint_dir)
    if dry_run and release_dir is None:
        raise ValueError("a dry run needs a release folder to write (release_dir / --out)")
    results_list = [] if results is None else _as_list(results)
    if results_list and checkpoint_name is None:
        names = sorted({n for r in results_list for n in r.get("checkpoints", {}) if n != r.get("reference")})
        if len(names) != 1:
            raise ValueError(f"the results hold checkpoints {names}: say which one is {ckpt} (checkpoint_name)")
        checkpoint_name = names[0]
    _, config = _check_checkpoint(ckpt)  # fail on an incomplete checkpoint before rendering anything
    extras = {Path(p).name: Path(p) for p in extra_files}
    if plot is not None:
        extras[Path(plot).name] = Path(plot)
    card = build_card(results_list, checkpoint_name or ckpt.name, repo_id=repo_id, config=config,
                      plot_filename=Path(plot).name if plot is not None else None, **card_kwargs)
    if release_dir is not None:
        out = build_release_dir(ckpt, release_dir, card, extra_files=extras, overwrite=overwrite)
        return out, (None if dry_run else upload(out, repo_id, token=token, private=private,
                                                 commit_message=commit_message))
    with tempfile.TemporaryDirectory(prefix="hf_mmkd_release_") as tmp:
        out = build_release_dir(ckpt, Path(tmp) / "release", card, extra_files=extras)
        return None, upload(out, repo_id, token=token, private=private, commit_message=commit_message)
