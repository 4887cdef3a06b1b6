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
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_mmkd.io import MANIFEST, OutputFolder
from hf_mmkd.metrics import parse_condition, rate_condition
from hf_mmkd.report import DATASET_NAMES, METRIC_NAMES, markdown_table, summarize

__all__ = [
    "DATA_PROVENANCE",
    "PROCESSOR_FILES",
    "build_card",
    "build_release_dir",
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
    "Corr": "pearsonr",
}

DATA_PROVENANCE = """\
- **CMU-MOSI** (Zadeh et al., 2016): 2,199 opinion segments from 93 English YouTube movie-review videos, sentiment
  in [-3, 3]; distributed by the CMU MultiComp Lab (CMU Multimodal SDK) for research use.
- **ICT-MMMO** (Wöllmer et al., 2013): English online movie-review videos rated 1-5; distributed by its authors
  for research use.
- Preprocessed features follow the MMSA layout (https://github.com/thuiar/MMSA).

**Terms.** These corpora are licensed for research use only. This repository contains model weights and code;
it does **not** contain or redistribute any of the data, its features or its transcripts. Obtain the corpora from
their original distributors under their terms. The weights were trained on research-use data: check those terms
before any non-research use of the model.
"""

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
               license: str = "apache-2.0", tags: Iterable[str] = (), data_provenance: str = DATA_PROVENANCE,
               template_path: str | os.PathLike | None = None, **template_vars: Any) -> ModelCard:
    """Render the model card of `checkpoint` (a key of `results["checkpoints"]`).

    `config` is the checkpoint's config.json (dict or path); it fills the inputs table, the role and the task.
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
    task = config.get("task", "regression")
    tables = "\n".join(markdown_table(r) for r in results_list)
    variables = dict(
        model_name=model_name, repo_id=repo_id, model_summary=model_summary,
        role=config.get("role", "sentiment"), method=config.get("distillation_method") or method,
        task_description="regression (a score; MOSI/MOSEI scale [-3, 3])" if task == "regression"
        else "classification", **_inputs_table(config),
        output_description="(B, 1) sentiment scores" if task == "regression" else "(B, num_labels) class logits",
        method_description=method_description, hyperparameters_table=_hyperparameters_table(hyperparameters),
        results_markdown=tables, plot_filename=plot_filename, data_provenance=data_provenance,
        method_citation=method_citation,
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


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if the Hub accepts it as a model repository `owner/name` (huggingface_hub's own validator:
    letters, digits, `-`, `_`, `.`, at most 96 characters, no `--` or `..`); a ValueError naming it otherwise.
    Every publishing path calls this before any work, a dry run included."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id {repo_id!r} is not of the form owner/name (e.g. my-org/mmkd-student)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo id {repo_id!r} is not a valid Hub repository id: {' '.join(str(err).split())}") from None
    return repo_id


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
    files.update({n: ckpt / n for n in PROCESSOR_FILES if (ckpt / n).is_file()})
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
           commit_message: str = "Upload hf_mmkd model") -> Any:
    """Create the model repo if needed and upload the release folder in one commit; returns the commit info."""
    release = Path(release_dir)
    for required in ("README.md", "config.json"):
        if not (release / required).is_file():
            raise FileNotFoundError(f"release folder {release} is missing {required}; build it with build_release_dir")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(release), repo_type="model",
                             commit_message=commit_message, ignore_patterns=[MANIFEST])


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
    check_repo_id(repo_id)
    if dry_run and release_dir is None:
        raise ValueError("a dry run needs a release folder to write (release_dir / --out)")
    results_list = [] if results is None else _as_list(results)
    if results_list and checkpoint_name is None:
        names = sorted({n for r in results_list for n in r.get("checkpoints", {})})
        if len(names) != 1:
            raise ValueError(f"the results hold checkpoints {names}: say which one is {ckpt} (checkpoint_name)")
        checkpoint_name = names[0]
    _, config = _check_checkpoint(ckpt)  # fail on an incomplete checkpoint before rendering anything
    from hf_mmkd.inference import load_model

    load_model(ckpt, device="cpu")  # a truncated weight file, a config that does not match the weights: named now
    extras = {Path(p).name: Path(p) for p in extra_files}
    if plot is not None:
        extras[Path(plot).name] = Path(plot)
    card = build_card(results_list, checkpoint_name or ckpt.name, repo_id=repo_id, config=config,
                      plot_filename=Path(plot).name if plot is not None else None, **card_kwargs)
    if release_dir is not None:
        out = build_release_dir(ckpt, release_dir, card, extra_files=extras, overwrite=overwrite,
                                verify=verify_release, command="publish")
        return out, (None if dry_run else upload(out, repo_id, token=token, private=private,
                                                 commit_message=commit_message))
    with tempfile.TemporaryDirectory(prefix="hf_mmkd_release_") as tmp:
        out = build_release_dir(ckpt, Path(tmp) / "release", card, extra_files=extras, verify=verify_release,
                                command="publish")
        return None, upload(out, repo_id, token=token, private=private, commit_message=commit_message)
