#!/usr/bin/env python
"""Group-disjoint K-fold benchmarks of a prepared data set: build the fold file, or write fold k as a data set.

    python dataset_scripts/make_folds.py build data_prepared/mosi benchmarks/folds/mosi_folds.json --folds 5 --seed 0
    python dataset_scripts/make_folds.py fold benchmarks/folds/mosi_folds.json data_prepared/mosi 0 data_prepared/mosi_fold0

`build` pools every row of every split of PREPARED, groups the rows (`--group-pattern`, a regular expression
over the row id whose first group is the group, by default the id without its last `_<part>`: MMSA's
`<video>_<segment>` ids give the video; or `--group-column`, a column of the data), and deals whole groups into
K folds: the groups are shuffled with `--seed`, then taken largest first and each put into the fold with the
fewest rows so far, so that the test sets are of about equal size. Fold k's test split is fold k; its validation
split is drawn by group from the other folds (shuffled with the seed and k, groups taken until they hold
`--validation-fraction` of those rows); its train split is the rest. No group (speaker, video) is ever in two
splits of a fold. The fold file (JSON) holds the rule, the seed, a SHA-256 of the rows' ids and labels, every
group's row ids and each fold's test and validation groups: it depends on the data and the arguments only, so
`build` rebuilds a shipped fold file byte for byte.

`fold` writes fold k of FOLDFILE as a prepared folder (train/validation/test parquet, README.md and
dataset_spec.json, with the label meaning of PREPARED's spec) that `train.py --dataset OUT_DIR` reads. The rows
of PREPARED must be exactly the rows the fold file was built from (ids and labels, by the SHA-256).

Neither command replaces a file it did not write (`hf_mmkd.io.OutputFile` / `OutputFolder`).
"""

from __future__ import annotations

import argparse
import json
import sys

from hf_mmkd.data.folds import DEFAULT_GROUP_PATTERN


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the fold file of a prepared data set")
    build.add_argument("prepared", metavar="PREPARED", help="prepared folder (dataset_scripts/prepare_*.py)")
    build.add_argument("fold_file", metavar="FOLDFILE", help="fold file to write (JSON)")
    build.add_argument("--folds", type=int, default=5, help="number of folds K (>= 2)")
    build.add_argument("--seed", type=int, default=0, help="seed of the group shuffles")
    build.add_argument("--validation-fraction", type=float, default=0.15,
                       help="share of each fold's non-test rows drawn (by group) as its validation split")
    group = build.add_mutually_exclusive_group()
    group.add_argument("--group-pattern", default=None,
                       help=f"regular expression matched against the whole row id; its first group is the row's "
                            f"group (default {DEFAULT_GROUP_PATTERN!r}: the id without its last '_<part>')")
    group.add_argument("--group-column", default=None, help="a column of the data holding each row's group")
    build.add_argument("--overwrite", action="store_true", help="replace a fold file this script wrote")
    fold = sub.add_parser("fold", help="write fold k as a prepared data set")
    fold.add_argument("fold_file", metavar="FOLDFILE")
    fold.add_argument("prepared", metavar="PREPARED", help="the prepared folder the fold file was built from")
    fold.add_argument("k", type=int, metavar="K", help="fold index, 0 .. K-1")
    fold.add_argument("out_dir", metavar="OUT_DIR", help="output folder (must be empty or absent, see --overwrite)")
    fold.add_argument("--overwrite", action="store_true", help="replace a folder this script wrote")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_mmkd.data.folds import build_fold_file, write_fold
    from hf_mmkd.io import OutputFile

    if args.command == "fold":
        out = write_fold(args.fold_file, args.prepared, args.k, args.out_dir, args.overwrite)
        print(f"wrote fold {args.k} to {out}")
        return 0
    target = OutputFile(args.fold_file, "make_folds.py", inputs=[args.prepared], overwrite=args.overwrite,
                        flag="FOLDFILE")
    target.check()  # fail before any work
    data = build_fold_file(args.prepared, args.folds, args.seed, args.validation_fraction, args.group_pattern,
                           args.group_column)
    target.write(json.dumps(data, indent=1, sort_keys=False) + "\n")
    for k, fold in enumerate(data["folds"]):
        print(f"fold {k}: " + ", ".join(f"{s} {n} rows" for s, n in fold["rows"].items())
              + f" ({len(fold['test'])} test groups, {len(fold['validation'])} validation groups)")
    print(f"wrote {args.fold_file} ({data['rows']} rows, {len(data['groups'])} groups)")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("make_folds.py", main))
