#!/usr/bin/env python
"""Write the SYNTHETIC demo dataset (`hf_mmkd.data.demo.make_demo_dataset`) as a prepared folder, with its
`dataset_spec.json` (`hf_mmkd.data.demo.demo_spec`: regression scores in [-3, 3], the same spec `train.py`
uses for its in-memory demo)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    from hf_mmkd.data.demo import DEMO_NAME, demo_card, demo_spec, make_demo_dataset
    from hf_mmkd.data.prepared import output_folder, save_prepared

    guard = output_folder(args.out_dir, "make_demo.py", args.overwrite)
    guard.check()  # fail before any work
    dsd = make_demo_dataset(seed=args.seed)
    out = save_prepared(dsd, guard, demo_card(seed=args.seed), demo_spec(dsd, seed=args.seed),
                        card_metadata={"pretty_name": DEMO_NAME, "tags": ["synthetic"]})
    print(", ".join(f"{s}: {len(d)} rows" for s, d in dsd.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("make_demo.py", main))
