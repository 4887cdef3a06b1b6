"""`hf-mmkd`: the command line of hf_mmkd.

    hf-mmkd evaluate CKPT [CKPT ...] --dataset D --protocol p2 [--seeds 1111 1112 1113] --out DIR [--names ...]
    hf-mmkd publish CKPT --repo-id ORG/NAME [--results DIR/mosi_p2.json] [--private] [--dry-run --out DIR]
    hf-mmkd predict CKPT [--text ...] [--audio WAV] [--video MP4] [--features X.npz]   (hf_mmkd.inference)
    hf-mmkd predict CKPT --dataset D [--split test] [--out predictions.jsonl] [--overwrite]
    hf-mmkd demo CKPT [--teacher CKPT] [--dataset PREPARED] [--port N]   (hf_mmkd.demo_app; the demo extra)

`evaluate` writes `<dataset>_<protocol>.json/.md/.png` (hf_mmkd.report) into DIR and prints the Markdown table.
`publish` builds the Hub release folder (card with a model-index from the evaluation JSON, the plot next to it,
weights, code, processor files) and uploads it; `--dry-run` only builds the folder.

Every user error (`hf_mmkd.io.USER_ERRORS`) ends the command with one line naming the problem on stderr and exit
status 1 (2 for bad usage), never a traceback. Output folders follow `hf_mmkd.io.OutputFolder`, checked before any
work: `--out` must not hold an input, be a file or read-only, and only what hf_mmkd wrote there is replaced.
`predict --dataset`'s output file follows `hf_mmkd.io.OutputFile`, checked before the model is loaded: `--out FILE`
must not be a folder, the checkpoint or the dataset; an existing FILE is replaced only with `--overwrite` and only
if hf_mmkd wrote it (listed in the `.hf_mmkd_outputs.json` of FILE's folder, where predict records what it
writes); a file that hf_mmkd did not write is never replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_mmkd.io import USER_ERRORS, OutputFile, OutputFolder, error_message, read_json

PROG = "hf-mmkd"


class CLIError(ValueError):
    """A problem with the command's inputs; printed as `hf-mmkd <command>: error: <message>`."""


# ------------------------------------------------------------------------------------------------ evaluate


def _seed(text: str) -> int:
    """An argparse type: a mask seed, an integer >= 0 (numpy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a mask seed must be an integer >= 0, got {text!r}")
    return value


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="robustness evaluation of checkpoints under a missing-modality protocol",
                       description="Evaluate checkpoints under every condition of a protocol and every mask seed; "
                                   "write JSON + Markdown + PNG and print the Markdown table.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="save_pretrained folders (teacher, student, ...)")
    p.add_argument("--dataset", required=True, help="prepared folder (dataset_scripts/), Hub dataset id, or 'demo'")
    p.add_argument("--protocol", required=True, type=str.lower, metavar="{p1,p2,p3,p4,p5}",
                   help="p1: rates 0.0-1.0, AUILC; p2: rates 0.0-0.9, mean; p3: six sets + {l,a,v}; p4: IMDer "
                        "missing rates MR 0.1-0.7, mean; p5: 7 patterns")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--seeds", nargs="+", type=_seed, default=None,  # None: hf_mmkd.evaluation.DEFAULT_SEEDS
                   help="mask seeds of the simulator (integers >= 0; default: 1111 1112 1113)")
    p.add_argument("--rates", nargs="+", type=float, default=None, help="p1/p2/p4: override the missing rates")
    p.add_argument("--sets", nargs="+", default=None, help="p3/p5: override the availability sets, e.g. l la lav")
    p.add_argument("--names", nargs="+", default=None, help="display names, one per checkpoint")
    p.add_argument("--dataset-name", default=None,
                   help="display name for titles and file names (default: the data set spec's name); the metric "
                        "set always comes from the spec (dataset_spec.json)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-text-length", type=int, default=None, help="token limit (default: train.py's)")
    p.add_argument("--out", required=True, help="output folder for the JSON, Markdown and PNG files")
    p.add_argument("--stem", default=None, help="file name stem (default: <dataset>_<protocol>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--bf16", action="store_true", help="run the models under bf16 autocast (CPU or GPU)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run `evaluate_checkpoints`, write the report, print the Markdown (with its notes) and the file paths."""
    from hf_mmkd.evaluation import (
        DEFAULT_SEEDS,
        checkpoint_names,
        default_stem,
        evaluate_checkpoints,
        report_markdown,
        write_evaluation_report,
    )

    names = checkpoint_names(args.checkpoints, args.names)
    stem = args.stem or default_stem(args.dataset, args.protocol, args.dataset_name)
    if args.stem is not None and (Path(stem).name != stem or stem in ("", ".", "..")):
        raise ValueError(f"--stem {stem!r} must be a plain file name (no folder, no '..'): the report is written "
                         "into --out and nowhere else")
    outputs = [f"{stem}.json", f"{stem}.md", f"{stem}.png"]
    out = OutputFolder(args.out, f"{PROG} evaluate", inputs=[*args.checkpoints, args.dataset], outputs=outputs,
                       flag="--out")
    out.check()  # a file, a read-only folder, a folder holding an input: before the evaluation, not after
    main_process = int(os.environ.get("RANK", "0")) == 0  # `accelerate launch`: conditions shared, rank 0 writes
    results = evaluate_checkpoints(
        dict(zip(names, args.checkpoints)), args.dataset, args.protocol, split=args.split,
        seeds=list(DEFAULT_SEEDS) if args.seeds is None else args.seeds,
        rates=args.rates, sets=args.sets, batch_size=args.batch_size, dataset_name=args.dataset_name,
        max_text_length=args.max_text_length, progress_bar=not args.quiet and main_process, bf16=args.bf16,
        shard_across_processes=True,
    )
    if not main_process:
        return 0
    out.record(*outputs)
    paths = write_evaluation_report(results, args.out, stem=stem)
    print(report_markdown(results))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


# ------------------------------------------------------------------------------------------------- publish


def _add_publish(sub) -> None:
    p = sub.add_parser("publish", help="build the Hub release folder of a checkpoint and upload it",
                       description="Card (model-index from evaluation results) + weights + code + processor files "
                                   "+ plot, uploaded with huggingface_hub.")
    p.add_argument("checkpoint", metavar="CKPT", help="save_pretrained folder to publish")
    p.add_argument("--repo-id", required=True, help="Hub model repository, ORG/NAME")
    p.add_argument("--results", nargs="+", default=None, metavar="JSON",
                   help="evaluation JSON(s) written by 'hf-mmkd evaluate'; the PNG of the same name is shipped too")
    p.add_argument("--checkpoint-name", default=None,
                   help="the checkpoint's name in the results (default: the one whose path is CKPT, or the only one)")
    p.add_argument("--plot", default=None, help="robustness plot to embed (default: the PNG next to the first JSON)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--dry-run", action="store_true", help="build the release folder in --out, do not upload")
    p.add_argument("--out", default=None, help="release folder to keep (required with --dry-run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder (only if everything in it was written by hf_mmkd)")
    p.add_argument("--space", action="store_true",
                   help="also a Gradio Space (the `hf-mmkd demo` app loading --repo-id with its own code): written to "
                        "space/ of the release folder, uploaded to the Space ORG/NAME-demo")
    p.set_defaults(func=cmd_publish)


def _read_results(path: str) -> list[dict[str, Any]]:
    """Results structures from an evaluation JSON: the report payload (`{"results", "summary"}`), a bare results
    structure, or a list of either."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"results file {file} does not exist")
    data = read_json(file, f"results file {file}")
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        res = item.get("results", item) if isinstance(item, dict) else None
        if not isinstance(res, dict) or "checkpoints" not in res:
            raise ValueError(f"results file {file} holds no evaluation results (no 'checkpoints'); "
                             f"write it with '{PROG} evaluate'")
        out.append(res)
    return out


def _checkpoint_name(results: list[dict[str, Any]], checkpoint: str, given: str | None) -> str | None:
    """Which results entry describes `checkpoint`: the given name, the entry whose recorded path is the checkpoint,
    the folder's name, or the only checkpoint of the results."""
    if not results:
        return given
    names = list(dict.fromkeys(n for r in results for n in r["checkpoints"] if n != r.get("reference")))
    if given is not None:
        missing = [f"{r['dataset']}/{r['protocol']}" for r in results if given not in r["checkpoints"]]
        if missing:
            raise CLIError(f"checkpoint name {given!r} is not in the results {missing}; they hold {names}")
        return given
    target = Path(checkpoint).resolve()
    by_path = {n for r in results for n, p in (r.get("checkpoint_paths") or {}).items() if Path(p).resolve() == target}
    if len(by_path) == 1:
        return by_path.pop()
    if len(names) == 1:
        return names[0]
    if Path(checkpoint).name in names:
        return Path(checkpoint).name
    raise CLIError(f"the results hold several checkpoints {names}; say which one {checkpoint} is with "
                   "--checkpoint-name")


def cmd_publish(args: argparse.Namespace) -> int:
    """Resolve results, plot and names, then `hub.publish`; print what was written and where it went."""
    from hf_mmkd.checkpoints import check_checkpoint_dir, check_repo_id

    try:
        check_repo_id(args.repo_id)  # in every mode, a dry run included
    except ValueError as err:
        raise CLIError(f"--repo-id: {err}") from None
    check_checkpoint_dir(args.checkpoint)
    if args.dry_run and args.out is None:
        raise CLIError("--dry-run builds the release folder only, so it needs --out DIR")
    if args.out is not None:  # before any work: the release folder must not hold the checkpoint, ...
        OutputFolder(args.out, f"{PROG} publish", inputs=[args.checkpoint, *(args.results or []), args.plot],
                     overwrite=args.overwrite, flag="--out").check()
    results = [r for path in (args.results or []) for r in _read_results(path)]
    name = _checkpoint_name(results, args.checkpoint, args.checkpoint_name)
    plot = Path(args.plot) if args.plot else None
    if plot is not None and not plot.is_file():
        raise FileNotFoundError(f"plot {plot} does not exist")
    extra = []
    for path in args.results or []:
        extra.append(Path(path))
        sibling = Path(path).with_suffix(".png")
        if plot is None and sibling.is_file():
            plot = sibling
        elif sibling.is_file() and sibling != plot:
            extra.append(sibling)
    from hf_mmkd.hub import check_hub_access, publish

    if not args.dry_run:
        check_hub_access(args.token)  # a token and a reachable Hub, before the card and the release folder
    release, commit = publish(args.checkpoint, args.repo_id, results=results or None, checkpoint_name=name,
                              plot=plot, extra_files=extra, release_dir=args.out, overwrite=args.overwrite,
                              dry_run=args.dry_run, private=args.private, token=args.token, space=args.space)
    if release is not None:
        print(f"release folder: {release}")
        for f in sorted(p.relative_to(release) for p in Path(release).rglob("*") if p.is_file()):
            print(f"  {f}")
    if args.dry_run:
        print("dry run: nothing uploaded")
    else:
        print(f"uploaded to https://huggingface.co/{args.repo_id}" + (f" ({commit})" if commit is not None else ""))
        if args.space:
            print(f"uploaded the Space to https://huggingface.co/spaces/{args.repo_id}-demo")
    return 0


# ------------------------------------------------------------------------------------------------- predict


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="sentiment of one example or of a dataset split (hf_mmkd.inference)",
                       description="Predict with a checkpoint from whichever modalities are given; the others are "
                                   "treated as missing.")
    p.add_argument("checkpoint", metavar="CKPT", help="save_pretrained folder or Hub model id")
    p.add_argument("--text", default=None, help="transcript")
    p.add_argument("--audio", default=None, help="audio file")
    p.add_argument("--video", default=None,
                   help="video file, read for its frames only, as the pipeline reads it (to use its audio track too, "
                        "give the same file as --audio)")
    p.add_argument("--features", default=None,
                   help=".npz with text/audio/vision arrays (steps, D), for modalities the model takes as features")
    p.add_argument("--start", type=float, default=None, help="segment start in the media files (seconds)")
    p.add_argument("--end", type=float, default=None, help="segment end in the media files (seconds)")
    p.add_argument("--dataset", default=None, help="predict every row of a prepared dataset split instead")
    p.add_argument("--split", default="test", help="with --dataset: the split (default: test)")
    p.add_argument("--batch-size", type=int, default=32, help="with --dataset: rows per batch")
    p.add_argument("--out", default="predictions.json",
                   help="with --dataset: output file, .json / .jsonl / .csv (default: predictions.json). It is "
                        "recorded in the .hf_mmkd_outputs.json of its folder; an existing file is replaced only with "
                        "--overwrite and only if hf_mmkd wrote it (listed there), never a file of your own")
    p.add_argument("--overwrite", action="store_true",
                   help="with --dataset: replace an existing --out file that hf_mmkd wrote")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    """`hf_mmkd.inference.predict` (prints the result as JSON) or `predict_dataset` (prints the file written).
    The arguments are checked before hf_mmkd.inference (torch, transformers) is imported: a mistake is told at once."""
    raw = {"text": args.text, "audio": args.audio, "video": args.video, "features": args.features}
    given = [f"--{k}" for k, v in raw.items() if v is not None]
    if args.dataset is not None:
        if given:
            raise CLIError(f"give either --dataset or single-example inputs, not both (got --dataset and "
                           f"{', '.join(given)})")
        out = OutputFile(args.out, f"{PROG} predict", inputs=[args.checkpoint, args.dataset],
                         overwrite=args.overwrite, flag="--out")
        path = _inference().predict_dataset(args.checkpoint, args.dataset, split=args.split, out_path=out,
                                            batch_size=args.batch_size)
        print(f"wrote predictions: {path}")
        return 0
    if not given:
        raise CLIError("nothing to predict from: give --text, --audio, --video and/or --features (or --dataset)")
    for flag in ("audio", "video", "features"):
        if raw[flag] is not None and Path(raw[flag]).is_dir():
            raise CLIError(f"--{flag} {raw[flag]} is a folder; give the path of one file")
        if raw[flag] is not None and not Path(raw[flag]).is_file():
            raise FileNotFoundError(f"--{flag} file {raw[flag]} does not exist")
    result = _inference().predict(args.checkpoint, **raw, start=args.start, end=args.end)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _inference():
    """hf_mmkd.inference, imported when a command needs it (it imports torch and transformers)."""
    try:
        from hf_mmkd import inference
    except ImportError as err:
        raise CLIError(f"prediction is not available in this installation (hf_mmkd.inference: {err})") from None
    return inference


# ---------------------------------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="try a checkpoint in the browser (a Gradio app; needs the demo extra)",
                       description="Serve a Gradio page on 127.0.0.1: one input per modality, a switch per modality, "
                                   "a P2 missing-rate slider, the prediction for every subset of the given modalities "
                                   "(hf_mmkd.demo_app; pip install -e \".[demo]\").")
    p.add_argument("checkpoint", metavar="CKPT", help="save_pretrained folder or Hub model id")
    p.add_argument("--teacher", default=None, metavar="CKPT", help="a teacher to show side by side")
    p.add_argument("--dataset", default=None, metavar="PREPARED",
                   help="prepared folder, Hub dataset id or 'demo': pick examples from its real rows")
    p.add_argument("--split", default="test", help="with --dataset: the split to pick from (default: test)")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: gradio's, 7860 or the next "
                                                          "free one)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """`hf_mmkd.demo_app.launch` (blocks until interrupted)."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CLIError("the demo needs gradio, which is not installed: pip install -e \".[demo]\"")
    if args.port is not None and not 0 < args.port < 65536:
        raise CLIError(f"--port must be a port number 1-65535, got {args.port}")
    from hf_mmkd.demo_app import launch

    launch(args.checkpoint, teacher=args.teacher, dataset=args.dataset, split=args.split, port=args.port)
    return 0


# ----------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The `hf-mmkd` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{evaluate,publish,predict,demo}")
    sub.required = True
    _add_evaluate(sub)
    _add_publish(sub)
    _add_predict(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hf-mmkd` console script; returns the exit status (0 ok, 1 error, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # argparse has printed its usage message
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"{PROG} {args.command}: error: {error_message(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
