"""`--help` works for every command and script: it prints a usage and exits 0 (a `%` in a help text once made
argparse crash with "unsupported format character")."""

from __future__ import annotations

import io
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
from conftest import REPO_ROOT

SCRIPTS = sorted(str(p.relative_to(REPO_ROOT)) for folder in ("dataset_scripts", "benchmarks")
                 for p in (REPO_ROOT / folder).glob("*.py")) + ["train.py"]
HF_MMKD_COMMANDS = [[], ["evaluate"], ["predict"], ["publish"]]


def help_of(run, argv0: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `run()` with sys.argv = [argv0, "--help"]."""
    out, err, saved = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [argv0, "--help"]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = run() or 0
            except SystemExit as exit_:
                code = exit_.code or 0
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


def test_every_script_is_found():
    assert {"train.py", "dataset_scripts/prepare_mmsa.py", "benchmarks/speed.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    code, out, err = help_of(lambda: runpy.run_path(str(REPO_ROOT / script), run_name="__main__"), script)
    assert code == 0, err[-2000:]
    assert out.startswith("usage: ") and "--help" in out, out[:500]


@pytest.mark.parametrize("command", HF_MMKD_COMMANDS, ids=lambda c: " ".join(["hf-mmkd", *c]))
def test_hf_mmkd_help(command):
    from hf_mmkd.cli import main

    code, out, err = help_of(lambda: main([*command, "--help"]), "hf-mmkd")
    assert code == 0, err[-2000:]
    assert out.startswith("usage: hf-mmkd" + "".join(f" {c}" for c in command)), out[:300]
