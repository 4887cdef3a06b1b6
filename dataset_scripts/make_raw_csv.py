#!/usr/bin/env python
"""Write the media CSV (id, media, start, end, text, label, split) for the real files in ../shared/data/raw.

- `mosi_<video>_<clip>.<wav|mp4>`: one row per file; text, label and split come from the MOSI `label.csv`
  (columns id, text, label, mode) row with id `<video>_<clip>`.
- `moud_<name>.mp4` + `moud_<name>.csv` (MOUD transcription: `#starttime;#endtime;transcription;
  sentimentAnnotations`): one row per utterance, cut by its start/end seconds, label -1/0/1, split --moud-split.

Media paths are written relative to the CSV's folder when possible. OUT.csv is written atomically, never inside
RAW_DIR, and an existing OUT.csv is replaced only with `--overwrite` and only if hf_mmkd wrote it
(`hf_mmkd.io.OutputFile`).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path


def mosi_rows(raw_dir: Path, label_csv: Path) -> list[dict]:
    with open(label_csv, newline="", encoding="utf-8") as f:
        labels = {r["id"]: r for r in csv.DictReader(f)}
    rows = []
    for media in sorted(raw_dir.glob("mosi_*")):
        if media.suffix.lower() not in (".wav", ".mp4", ".avi", ".mkv", ".flac", ".mp3"):
            continue
        uid = media.stem[len("mosi_"):]
        if uid not in labels:
            raise ValueError(f"{media.name}: id {uid!r} not found in {label_csv}")
        r = labels[uid]
        rows.append({"id": f"mosi_{uid}", "media": media, "start": "", "end": "", "text": r["text"],
                     "label": r["label"], "split": {"valid": "validation"}.get(r["mode"], r["mode"])})
    return rows


def moud_rows(raw_dir: Path, split: str) -> list[dict]:
    rows = []
    for transcript in sorted(raw_dir.glob("moud_*.csv")):
        media = transcript.with_suffix(".mp4")
        if not media.is_file():
            raise ValueError(f"{transcript.name}: its video {media.name} is missing")
        with open(transcript, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=";", quotechar='"')
            header = next(reader)
            if [h.strip("#") for h in header] != ["starttime", "endtime", "transcription", "sentimentAnnotations"]:
                raise ValueError(f"{transcript.name}: unexpected header {header}")
            for k, rec in enumerate(reader):
                if not rec:
                    continue
                start, end, text, label = rec
                rows.append({"id": f"{transcript.stem}_{k}", "media": media, "start": float(start), "end": float(end),
                             "text": text.strip(), "label": float(label), "split": split})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_dir", metavar="RAW_DIR", help="e.g. ../shared/data/raw")
    parser.add_argument("out_csv", metavar="OUT.csv")
    parser.add_argument("--mosi-labels", default=None, help="MOSI label.csv (default: RAW_DIR/../mosi/label.csv)")
    parser.add_argument("--moud-split", default="test", choices=["train", "validation", "test"],
                        help="split for the MOUD utterances (default test)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT.csv (only one that hf_mmkd wrote)")
    args = parser.parse_args(argv)
    from hf_mmkd.io import OutputFile

    raw = Path(args.raw_dir).resolve()
    out = Path(args.out_csv).resolve()
    label_csv = Path(args.mosi_labels) if args.mosi_labels else raw.parent / "mosi" / "label.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    guard = OutputFile(out, "make_raw_csv.py", inputs=[raw, label_csv], overwrite=args.overwrite, flag="OUT.csv")
    guard.check()  # before anything is read
    rows = mosi_rows(raw, label_csv) + moud_rows(raw, args.moud_split)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=["id", "media", "start", "end", "text", "label", "split"])
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "media": os.path.relpath(r["media"], out.parent)})
    guard.write(buf.getvalue())
    print(f"wrote {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("make_raw_csv.py", main))
