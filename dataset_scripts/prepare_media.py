#!/usr/bin/env python
"""Raw media (audio/video files + transcripts) -> prepared dataset with 16 kHz audio, frames and text.

CSV columns: id, media, start, end, text, label, split. `media` is a path (relative to the CSV's folder or
absolute); start/end are optional seconds (empty = whole file); split is train / validation / test; the label
column can have another name (--label-column). Regression labels are numbers (the label range defaults to
[floor(min), ceil(max)] of them, the neutral band to the range's; see `hf_mmkd.data.spec`); with --task
classification a label is a class name of --class-names or a class id (without --class-names, text labels are
named in sorted order). The labels' meaning goes to OUT_DIR/dataset_spec.json.
Audio is decoded with PyAV, resampled to 16 kHz mono and stored as wav bytes in an `Audio(decode=False)`
column; frames are sampled at --fps (at most --max-frames per row) and stored as images.

To build the CSV for the real files in ../shared/data/raw, run `dataset_scripts/make_raw_csv.py` first.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path


def parse_args(argv=None):
    from hf_mmkd.data.spec import add_spec_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", metavar="CSV", help="rows: id, media, start, end, text, label, split")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--fps", type=float, default=1.0, help="frame sampling rate in frames per second (default 1)")
    parser.add_argument("--max-frames", type=int, default=16, help="at most this many frames per row (default 16)")
    parser.add_argument("--frame-size", type=int, default=224, help="frames are fitted inside SIZE x SIZE (default 224)")
    parser.add_argument("--max-clip-seconds", type=float, default=None,
                        help="refuse a row whose media segment is longer than this (default 600 s: "
                             "hf_mmkd.data.media.MAX_CLIP_SECONDS; memory grows with the clip)")
    parser.add_argument("--skip-bad", action="store_true", help="skip rows whose media is missing or corrupt, and report them")
    add_spec_arguments(parser)
    parser.add_argument("--label-column", default="label", help="the CSV column holding the label (default: label)")
    parser.add_argument("--name", default=None, help="dataset name for the card and the spec (display only; default: "
                                                     "the CSV's file name)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return parser.parse_args(argv)


def card(csv_path: Path, args, spec, skipped) -> str:
    from hf_mmkd.data.spec import spec_markdown

    skipped_text = "\n".join(f"- skipped {s}" for s in skipped) or "- none skipped"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# {spec.name} (prepared for hf_mmkd)

Built by `dataset_scripts/prepare_media.py` from `{csv_path.name}` on {now}. Audio: 16 kHz mono wav bytes
(`Audio(decode=False)`; decode with `hf_mmkd.data.media.decode_wav`). Frames: sampled at {args.fps} fps, at most
{args.max_frames} per row, fitted inside {args.frame_size} px. Column meanings: `hf_mmkd/data/prepared.py`.

{skipped_text}

{spec_markdown(spec)}

The media keep the licence of their source corpus; do not push them to a public repository unless it allows.
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_mmkd.data.media import build_media_dataset, check_sampling, read_media_csv
    from hf_mmkd.data.prepared import finish_prepared, output_folder, save_prepared
    from hf_mmkd.data.spec import label_range_flag, split_summary

    csv_path = Path(args.csv)
    if not csv_path.is_file():
        raise ValueError(f"CSV file {csv_path} not found")
    check_sampling(args.fps, args.max_frames, args.frame_size)
    from hf_mmkd.data.media import MAX_CLIP_SECONDS

    max_seconds = MAX_CLIP_SECONDS if args.max_clip_seconds is None else args.max_clip_seconds
    if not (max_seconds > 0 and max_seconds != float("inf")):
        raise ValueError(f"--max-clip-seconds must be a positive, finite number of seconds, got {max_seconds:g}")
    task = args.task or "regression"
    if task == "classification" and (args.label_range or args.neutral_band):
        raise ValueError("--label-range and --neutral-band apply to regression labels; this is classification")
    if task == "regression" and args.class_names:
        raise ValueError("--class-names applies to classification (--task classification)")
    label_range = label_range_flag(args.label_range)
    rows, class_names = read_media_csv(csv_path, label_range, label_column=args.label_column, task=task,
                                       class_names=args.class_names)
    guard = output_folder(args.out_dir, "prepare_media.py", args.overwrite,
                          inputs=[csv_path, *sorted({str(r["media"]) for r in rows})])
    guard.check()  # fail before any decoding
    dsd, skipped = build_media_dataset(rows, args.fps, args.max_frames, args.frame_size, args.skip_bad, task,
                                       max_seconds)
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    dsd, spec = finish_prepared(dsd, name=args.name or csv_path.stem,
                                source=f"media CSV {csv_path.name}, dataset_scripts/prepare_media.py",
                                keep_rows_without_modality=args.keep_rows_without_modality, task=task,
                                label_range=label_range, neutral_band=args.neutral_band, class_names=class_names)
    out = save_prepared(dsd, guard, card(csv_path, args, spec, skipped), spec)
    print("\n".join(split_summary(spec)))
    print(f"labels: {spec.task}, {spec.label_description}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("prepare_media.py", main))
