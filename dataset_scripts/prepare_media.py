#!/usr/bin/env python
"""Raw media (audio/video files + transcripts) -> prepared dataset with 16 kHz audio, frames and text.

CSV columns: id, media, start, end, text, label, split. `media` is a path (relative to the CSV's folder or
absolute); start/end are optional seconds (empty = whole file); split is train / validation / test.
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", metavar="CSV", help="rows: id, media, start, end, text, label, split")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--fps", type=float, default=1.0, help="frame sampling rate in frames per second (default 1)")
    parser.add_argument("--max-frames", type=int, default=16, help="at most this many frames per row (default 16)")
    parser.add_argument("--frame-size", type=int, default=224, help="frames are fitted inside SIZE x SIZE (default 224)")
    parser.add_argument("--skip-bad", action="store_true", help="skip rows whose media is missing or corrupt, and report them")
    parser.add_argument("--label-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="refuse labels outside [LO, HI] (e.g. -3 3 for MOSI); labels are never clipped")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return parser.parse_args(argv)


def card(csv_path: Path, args, dsd, skipped) -> str:
    rows = "\n".join(
        f"| {s} | {len(d)} | {sum(d['has_text'])} | {sum(d['has_audio'])} | {sum(d['has_vision'])} |"
        for s, d in dsd.items()
    )
    skipped_text = "\n".join(f"- skipped {s}" for s in skipped) or "- none skipped"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Media dataset (prepared for hf_mmkd)

Built by `dataset_scripts/prepare_media.py` from `{csv_path.name}` on {now}. Audio: 16 kHz mono wav bytes
(`Audio(decode=False)`; decode with `hf_mmkd.data.media.decode_wav`). Frames: sampled at {args.fps} fps, at most
{args.max_frames} per row, fitted inside {args.frame_size} px. Column meanings: `hf_mmkd/data/prepared.py`.

| split | rows | has_text | has_audio | has_vision |
|---|---|---|---|---|
{rows}

{skipped_text}

The media keep the licence of their source corpus; do not push them to a public repository unless it allows.
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_mmkd.data.media import build_media_dataset, check_sampling, read_media_csv
    from hf_mmkd.data.prepared import output_folder, save_prepared

    csv_path = Path(args.csv)
    if not csv_path.is_file():
        raise ValueError(f"CSV file {csv_path} not found")
    check_sampling(args.fps, args.max_frames, args.frame_size)
    rows = read_media_csv(csv_path, tuple(args.label_range) if args.label_range else None)
    guard = output_folder(args.out_dir, "prepare_media.py", args.overwrite,
                          inputs=[csv_path, *sorted({str(r["media"]) for r in rows})])
    guard.check()  # fail before any decoding
    dsd, skipped = build_media_dataset(rows, args.fps, args.max_frames, args.frame_size, args.skip_bad)
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    out = save_prepared(dsd, guard, card(csv_path, args, dsd, skipped))
    for split, d in dsd.items():
        print(f"{split}: {len(d)} rows, has_text {sum(d['has_text'])}, has_audio {sum(d['has_audio'])}, "
              f"has_vision {sum(d['has_vision'])}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("prepare_media.py", main))
