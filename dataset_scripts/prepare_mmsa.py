#!/usr/bin/env python
"""Convert an MMSA-layout pickle (thuiar/MMSA `unaligned_50.pkl`, `aligned_50.pkl`, ...) to a prepared dataset.

Writes OUT_DIR/data/{train,validation,test}-*.parquet, OUT_DIR/README.md (`configs:` YAML + provenance) and
OUT_DIR/dataset_spec.json (what the labels mean; `hf_mmkd.data.spec`). Load it back with
`hf_mmkd.data.load_prepared(OUT_DIR)` or `datasets.load_dataset("parquet", ...)`.

The task is the kind of labels the pickle has (`regression_labels` or `classification_labels`); MMSA's own
files carry both, and then `--task` must say which. Regression: the label range defaults to [floor(min),
ceil(max)] of the labels and the neutral band to the range's (see `hf_mmkd.data.spec`); classification: the
class names default to the ids (`--class-names` names them in id order). Rows with no modality at all are left
out (counted per split on stdout and in the card, ids in dataset_spec.json) unless
--keep-rows-without-modality.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import sys
from pathlib import Path

PICKLE_WARNING = (
    "WARNING: IN.pkl is a Python pickle, and loading an arbitrary pickle can run arbitrary code. prepare_mmsa.py "
    "reads it with a restricted unpickler that loads only numpy arrays and Python containers and refuses anything "
    "else; still, only convert files from a source you trust (e.g. MMSA's published files, checked against their "
    "SHA-256)."
)


def parse_args(argv=None):
    from hf_mmkd.data.spec import add_spec_arguments

    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=PICKLE_WARNING,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pickle", metavar="IN.pkl", help="MMSA-layout pickle: {'train'|'valid'|'test': {key: array}}")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder (must be empty or absent, see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    add_spec_arguments(parser)
    parser.add_argument("--name", default=None, help="dataset name for the card and the spec (display only; default: "
                                                     "the pickle's file name)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None,
                        help="also upload OUT_DIR to this (private) Hub dataset repo; mind the corpus licence")
    parser.add_argument("--public", action="store_true", help="with --push-to-hub: make the repo public")
    return parser.parse_args(argv)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card(name: str, src: Path, digest: str, report: dict, spec) -> str:
    from hf_mmkd.data.spec import spec_markdown

    dims = ", ".join(f"{m} {d}" for m, d in report["feature_dims"].items()) or "none"
    notes = []
    if report["audio_neg_inf_set_to_0"]:
        notes.append(f"- {report['audio_neg_inf_set_to_0']} audio values of -inf were set to 0 (as MMSA's loader does).")
    for where, count in report["non_finite_set_to_0"].items():
        notes.append(f"- {count} other non-finite values in {where} were set to 0.")
    notes_text = "\n".join(notes) or "- No non-finite values were found."
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# {name} (prepared for hf_mmkd)

Converted from an MMSA-layout pickle by `dataset_scripts/prepare_mmsa.py`. Column meanings: see
`hf_mmkd/data/prepared.py`. A modality that is missing in a row has `has_<modality> = False`; its
feature column is null (an `Array2D` null reads back as nan, so always use the `has_*` flags).

## Provenance

- Source file: `{src.name}` (SHA-256 `{digest}`)
- Converted: {now}, `{' '.join(sys.argv)}`
- Feature widths: {dims}
- Sequences are truncated to their `*_lengths` (right padding removed).
{notes_text}

{spec_markdown(spec)}
## Licence

This folder holds features derived from the source corpus and inherits its terms. Do not push it to a public
repository unless those terms allow it.
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_mmkd.data.mmsa import load_mmsa_pickle, mmsa_task, mmsa_to_dataset_dict
    from hf_mmkd.data.prepared import finish_prepared, output_folder, push_prepared, save_prepared
    from hf_mmkd.data.spec import label_range_flag, split_summary

    src = Path(args.pickle)
    if not src.is_file():
        raise FileNotFoundError(f"input pickle {src} not found")
    guard = output_folder(args.out_dir, "prepare_mmsa.py", args.overwrite, inputs=[src])
    guard.check()  # fail before any work
    data = load_mmsa_pickle(src)  # restricted: numpy arrays and containers only, never code
    task = mmsa_task(data, args.task)
    if task == "classification" and (args.label_range or args.neutral_band):
        raise ValueError("--label-range and --neutral-band apply to regression labels; this is classification")
    if task == "regression" and args.class_names:
        raise ValueError("--class-names applies to classification labels; this is regression")
    label_range = label_range_flag(args.label_range)
    dsd, report = mmsa_to_dataset_dict(data, label_range, task)
    digest = sha256(src)
    name = args.name or src.stem
    dsd, spec = finish_prepared(
        dsd, name=name, source=f"MMSA-layout pickle {src.name} (SHA-256 {digest}), dataset_scripts/prepare_mmsa.py",
        keep_rows_without_modality=args.keep_rows_without_modality, task=task, label_range=label_range,
        neutral_band=args.neutral_band, class_names=args.class_names)
    out = save_prepared(dsd, guard, card(name, src, digest, report, spec), spec)
    print("\n".join(split_summary(spec)))
    print(f"labels: {spec.task}, {spec.label_description}" + ("" if args.label_range or task != "regression"
                                                              else " (range from the labels; set it with --label-range)"))
    print(f"wrote {out}")
    if args.push_to_hub:
        push_prepared(out, args.push_to_hub, private=not args.public)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("prepare_mmsa.py", main))
