"""Reliability cases that need a process or a file system (the others are rows of tests/test_bad_inputs.py):

- no command deletes a user's files: `--overwrite` into a folder that holds an input or foreign files;
- a full disk (a small tmpfs when the test may mount one, else an injected ENOSPC) and a read-only output folder:
  one line on stderr, a non-zero exit status, nothing partial left behind;
- two train.py runs into one output_dir: the second is refused at start, and a killed run's lock does not block
  the next one;
- interrupted saves (`.student.tmp-<pid>-*`) are cleaned on the next start, and only those;
- an existing teacher is reused only when its provenance record matches, and the normal output says so;
- `hf-mmkd evaluate --protocol p2 --rates 0.0 0.5` gives a report whose summary names its rates;
- `hf-mmkd publish` checks the release (loads it back and runs it) before anything is uploaded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import datasets
import numpy as np
import pytest
from test_resume import kill_mid_stage
from test_bad_inputs import (
    HF_MMKD,
    MAKE_DEMO,
    PREPARE_MEDIA,
    PREPARE_MMSA,
    TINY_TRAIN,
    TRAIN,
    _checkpoint,
    mmsa_data,
    run_command,
    shows,
    small_demo,
    write_wav,
)

from hf_mmkd import MMKDForSentiment
from hf_mmkd.io import MANIFEST, PROVENANCE_FILE, read_json, temporary_name
from hf_mmkd.training import main as train_main

QUICK = [*TINY_TRAIN, "--max_steps", "1"]  # one optimiser step per stage


def one_error_line(stderr: str, expect: str) -> None:
    """What a user error looks like: no traceback, exactly one `<prog>: error: ...` line containing `expect`."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and shows(errors[0], expect), stderr[-3000:]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to show that nothing was touched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_pickle(path: Path, data=None) -> Path:
    import pickle

    path.write_bytes(pickle.dumps(mmsa_data() if data is None else data))
    return path


# ---- no command deletes a user's files --------------------------------------------------------------------------


def test_overwrite_never_deletes_inputs_or_files_hf_mmkd_did_not_write(tmp_path):
    # prepare_mmsa.py DIR/mosi.pkl DIR --overwrite used to delete mosi.pkl and everything else in DIR.
    folder = tmp_path / "DIR"
    folder.mkdir()
    write_pickle(folder / "mosi.pkl")
    (folder / "notes.txt").write_text("mine")
    before = tree(folder)
    code, err = run_command(PREPARE_MMSA, [str(folder / "mosi.pkl"), str(folder), "--overwrite"])
    assert code == 1
    one_error_line(err, "contains the input")
    assert tree(folder) == before

    # hf-mmkd publish RUN/student --dry-run --out RUN --overwrite used to delete teacher/, *_run/ and results.json.
    run = tmp_path / "RUN"
    for name in ("teacher", "student"):
        shutil.copytree(_checkpoint(), run / name)
    for name in ("teacher_run", "student_run"):
        (run / name / "checkpoint-1").mkdir(parents=True)
        (run / name / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (run / "results.json").write_text('{"student": {}}')
    before = tree(run)
    code, err = run_command(HF_MMKD, ["publish", str(run / "student"), "--repo-id", "me/x", "--dry-run",
                                      "--out", str(run), "--overwrite"])
    assert code == 1
    one_error_line(err, "--out … contains the input …student")
    assert tree(run) == before

    # A release folder that hf_mmkd wrote is replaced by --overwrite; a file the user added blocks that.
    release = tmp_path / "release"
    publish = ["publish", str(run / "student"), "--repo-id", "me/x", "--dry-run", "--out", str(release)]
    assert run_command(HF_MMKD, publish)[0] == 0
    assert read_json(release / MANIFEST)["entries"]["model.safetensors"] == "publish"
    code, err = run_command(HF_MMKD, publish)
    one_error_line(err, "is not empty; pass --overwrite")
    assert run_command(HF_MMKD, [*publish, "--overwrite"])[0] == 0
    (release / "my_notes.md").write_text("mine")
    code, err = run_command(HF_MMKD, [*publish, "--overwrite"])
    one_error_line(err, "holds my_notes.md, which hf_mmkd did not write")
    assert (release / "my_notes.md").read_text() == "mine" and (release / "config.json").is_file()


def test_evaluate_replaces_only_its_own_report_files(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.md").write_text("the user's file")
    data = small_demo(tmp_path, mutate=lambda d: d.__class__({**d, "test": d["validation"]}))
    argv = ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2", "--rates", "0.0", "--seeds", "1",
            "--out", str(reports)]
    for _ in range(2):  # the second run replaces the first one's files, which the manifest says are hf_mmkd's
        code, err = run_command(HF_MMKD, argv)
        assert code == 0, err
    stem = "hf_mmkd_synthetic_demo_p2"  # <the data set's spec name>_<protocol>
    assert sorted(p.name for p in reports.iterdir()) == [MANIFEST, f"{stem}.json", f"{stem}.md", f"{stem}.png",
                                                          "summary.md"]
    assert (reports / "summary.md").read_text() == "the user's file"


def test_replacing_a_folder_hf_mmkd_wrote_keeps_the_files_a_user_put_in_it(tmp_path):
    """`prepare_mmsa.py --overwrite` and a re-run of train.py replace a folder only when every file in it is
    hf_mmkd's: a user's OUT/data/my_notes.txt or RUN/student/my_eval_notes.md makes them refuse, naming it."""
    src, out = write_pickle(tmp_path / "in.pkl"), tmp_path / "out"
    assert run_command(PREPARE_MMSA, [str(src), str(out)])[0] == 0
    assert run_command(PREPARE_MMSA, [str(src), str(out), "--overwrite"])[0] == 0  # all hf_mmkd's: replaced
    (out / "data" / "my_notes.txt").write_text("mine")
    code, err = run_command(PREPARE_MMSA, [str(src), str(out), "--overwrite"])
    assert code == 1
    one_error_line(err, "holds …out/data/my_notes.txt, which hf_mmkd did not write")
    assert (out / "data" / "my_notes.txt").read_text() == "mine"

    run = tmp_path / "run"
    argv = ["--output_dir", str(run), *QUICK, "--stage", "student", "--method", "none"]
    assert run_command(TRAIN, argv)[0] == 0
    assert run_command(TRAIN, argv)[0] == 0  # its own student/ (card and summary included) is replaced
    (run / "student" / "my_eval_notes.md").write_text("mine")
    code, err = run_command(TRAIN, argv)
    assert code == 1
    one_error_line(err, "holds …student/my_eval_notes.md, which hf_mmkd did not write")
    assert (run / "student" / "my_eval_notes.md").read_text() == "mine"


def test_evaluate_stem_and_prepare_symlink_never_write_elsewhere(tmp_path):
    data = small_demo(tmp_path, mutate=lambda d: d.__class__({**d, "test": d["validation"]}))
    for stem in ("../x", str(tmp_path / "abs"), ".."):
        code, err = run_command(HF_MMKD, ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2",
                                          "--out", str(tmp_path / "reports"), "--stem", stem])
        assert code == 1
        one_error_line(err, f"--stem '{stem}' must be a plain file name")
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "abs.json").exists()
    assert not (tmp_path / "reports").exists()
    # prepare_mmsa.py into a user's symbolic link: refused, the link and what it points to untouched.
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    code, err = run_command(PREPARE_MMSA, [str(write_pickle(tmp_path / "in.pkl")), str(tmp_path / "link"),
                                           "--overwrite"])
    assert code == 1
    one_error_line(err, "output folder …link is a symbolic link; prepare_mmsa.py never replaces it")
    assert (tmp_path / "link").is_symlink() and list(target.iterdir()) == []


def test_concurrent_writers_of_one_folder_lose_no_manifest_entry(tmp_path):
    """Six processes each write 15 files into one folder through `OutputFile` at the same moment: the manifest
    lists all 90 (without the lock, read-modify-write races lose entries)."""
    folder = tmp_path / "out"
    folder.mkdir()
    script = ("import sys, time\nfrom pathlib import Path\nfrom hf_mmkd.io import OutputFile\n"
              "n, folder, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])\n"
              "while not go.exists(): time.sleep(0.001)\n"
              "for k in range(15): OutputFile(folder / f'p{n}_{k}.json', 'test').write('{}')\n")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n), str(folder), str(go)], stderr=subprocess.PIPE,
                              text=True) for n in range(6)]
    time.sleep(2)  # every process imported hf_mmkd and waits
    go.write_text("")
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert len(read_json(folder / MANIFEST)["entries"]) == 90
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST] + [f"p{n}_{k}.json" for n in range(6)
                                                                            for k in range(15)])


def test_a_full_disk_during_the_report_leaves_no_partial_report(tmp_path, monkeypatch):
    """ENOSPC on the last file of `evaluate`'s report (the PNG): none of the three files appears."""
    import hf_mmkd.io

    real = hf_mmkd.io._write_temporary

    def full_on_png(path, data):
        if Path(path).suffix == ".png":
            raise hf_mmkd.io._write_error(OSError(errno.ENOSPC, "No space left on device"), Path(path))
        return real(path, data)
    monkeypatch.setattr(hf_mmkd.io, "_write_temporary", full_on_png)
    data = small_demo(tmp_path, mutate=lambda d: d.__class__({**d, "test": d["validation"]}))
    reports = tmp_path / "reports"
    code, err = run_command(HF_MMKD, ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2",
                                      "--rates", "0.0", "--seeds", "1", "--out", str(reports), "--quiet"])
    assert code == 1
    one_error_line(err, ".png: no space left on the device (disk full); nothing was written there")
    assert [p.name for p in reports.iterdir()] in ([], [MANIFEST])


# ---- a full disk, a read-only folder --------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """Mount a tmpfs at `folder` (root only); skip when this machine does not let the test mount one."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission); the injected variant runs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def media_csv(folder: Path) -> Path:
    """A media CSV of two 1-second clips (one train, one validation row)."""
    write_wav(folder / "a.wav", seconds=1.0)
    table = folder / "rows.csv"
    table.write_text("id,media,start,end,text,label,split\nu1,a.wav,,,good,1,train\nu2,a.wav,,,bad,-1,validation\n")
    return table


def nearly_full_tmpfs(folder: Path, free: int = 16 * 1024):
    """A 1 MiB tmpfs at `folder` of which `free` bytes are left (a filler file takes the rest)."""
    stack = contextlib.ExitStack()
    stack.enter_context(tmpfs(folder, "size=1m"))
    filler = folder / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * (shutil.disk_usage(folder).free - free))
    return stack


def disk_full_commands(tmp_path: Path, out_root: Path) -> list[tuple[str, list[str], str]]:
    """(command, argv, the output that must not exist afterwards) for make_demo.py, prepare_mmsa.py, train.py."""
    src = write_pickle(tmp_path / "in.pkl", mmsa_data(n=(64, 16, 16)))
    table = media_csv(tmp_path)
    return [(MAKE_DEMO, [str(out_root / "demo")], "demo"),
            (PREPARE_MMSA, [str(src), str(out_root / "mmsa")], "mmsa"),
            (PREPARE_MEDIA, [str(table), str(out_root / "media")], "media"),
            (TRAIN, ["--output_dir", str(out_root / "run"), *QUICK, "--stage", "teacher"], "run/teacher")]


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_disk_full_gives_one_line_and_leaves_nothing(tmp_path, how, monkeypatch):
    out_root = tmp_path / "disk"
    if how == "tmpfs":
        stack = nearly_full_tmpfs(out_root)
    else:  # the writers fail as a full disk makes them fail (OSError ENOSPC from pyarrow and from save_pretrained)
        out_root.mkdir()
        stack = contextlib.ExitStack()

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(datasets.Dataset, "to_parquet", full)
        monkeypatch.setattr(MMKDForSentiment, "save_pretrained", full)
    with stack:
        before = sorted(p.name for p in out_root.iterdir())
        for command, argv, output in disk_full_commands(tmp_path, out_root):
            code, err = run_command(command, argv)
            assert code == 1, (command, err[-3000:])
            one_error_line(err, "no space left on the device (disk full)")
            assert not (out_root / output).exists(), command
        leftover = sorted(p.name for p in out_root.iterdir() if p.name not in before)
        assert leftover in ([], ["run"]), leftover  # train.py's run folder holds no partial teacher:
        if leftover:
            assert not [p for p in (out_root / "run").iterdir() if ".tmp-" in p.name]


def test_torch_checkpoint_write_failure_is_one_line(tmp_path, monkeypatch):
    """torch.save reports a failed write (a full disk) as a RuntimeError of its zip writer."""
    import torch

    def broken_save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(torch, "save", broken_save)
    out = tmp_path / "run"
    code, err = run_command(TRAIN, ["--output_dir", str(out), *QUICK, "--stage", "teacher", "--save_strategy", "steps",
                                    "--save_steps", "1"])
    assert code == 1
    one_error_line(err, "cannot write the checkpoints in …teacher_run: torch could not write the file")
    assert not (out / "teacher").exists()


@pytest.mark.parametrize("how", ["real", "injected"])
def test_read_only_output_folder_fails_before_any_work(tmp_path, how, monkeypatch):
    ro = tmp_path / "ro"
    stack = contextlib.ExitStack()
    if how == "real":
        if os.geteuid() != 0:
            ro.mkdir()
            ro.chmod(0o555)
            stack.callback(ro.chmod, 0o755)
        else:  # root ignores permissions: a read-only tmpfs is what a read-only folder is to root
            stack.enter_context(tmpfs(ro, "ro,size=64k"))
    else:
        ro.mkdir()
        import hf_mmkd.io

        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and Path(path).resolve().is_relative_to(ro.resolve()):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(hf_mmkd.io.os, "open", read_only)

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the evaluation ran before --out was checked")
    monkeypatch.setattr("hf_mmkd.evaluation.evaluate_checkpoints", no_evaluation)
    src = write_pickle(tmp_path / "in.pkl")
    data = small_demo(tmp_path)
    commands = [(MAKE_DEMO, [str(ro / "demo")]), (PREPARE_MMSA, [str(src), str(ro / "mmsa")]),
                (PREPARE_MEDIA, [str(media_csv(tmp_path)), str(ro / "media")]),
                (TRAIN, ["--output_dir", str(ro / "run"), *QUICK]),
                (HF_MMKD, ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2", "--out", str(ro)])]
    with stack:
        for command, argv in commands:
            code, err = run_command(command, argv)
            assert code == 1, (command, err[-3000:])
            one_error_line(err, "cannot be written (…ro: ")
            assert "read-only file system" in err or "permission denied" in err, err
        assert list(ro.iterdir()) == []


# ---- concurrent runs, interrupted saves ---------------------------------------------------------------------

def test_second_run_into_a_busy_output_dir_is_refused_and_a_killed_run_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), *QUICK, "--stage", "teacher"]

    def second_run(proc):  # refused at start: nothing of the first run is touched
        code, err = run_command(TRAIN, argv)
        assert code == 1
        one_error_line(err, f"{out} is in use by another run (process {proc.pid}, train.py): wait for it to finish")
        assert proc.poll() is None and not (out / "teacher").exists()

    # The first run holds inside its first training step until it is killed (SIGKILL: no clean-up of its own).
    assert kill_mid_stage(out, argv[2:], tmp_path / "holding", hold_at=1, while_held=second_run) == -signal.SIGKILL
    code, err = run_command(TRAIN, argv)  # the kernel released the killed run's lock
    assert code == 0, err[-3000:]
    assert (out / "teacher" / "config.json").is_file()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_interrupted_saves_are_cleaned_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    stale = [temporary_name(out / "student", pid=pid), temporary_name(out / "teacher", "old", pid=pid),
             temporary_name(out / "results.json", pid=pid)]
    for path in stale[:2]:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
    stale[2].write_text("{")
    alive = temporary_name(out / "student")  # a save in progress (this process): kept
    alive.mkdir()
    forged = Path(str(stale[0])[:-1] + ("0" if str(stale[0])[-1] != "0" else "1"))  # check digits wrong: kept
    forged.mkdir()
    users = user_files_named_like_temporaries(out, pid)
    code, err = run_command(TRAIN, ["--output_dir", str(out), *QUICK, "--stage", "student", "--method", "none"])
    assert code == 0, err[-3000:]
    assert not any(p.exists() for p in stale)
    assert alive.is_dir() and forged.is_dir() and (out / "student" / "config.json").is_file()
    assert all(path.read_text() == "the user's" for path in users)
    # A prepared folder's interrupted save (a sibling of OUT_DIR) goes the same way on the next write.
    sibling = temporary_name(tmp_path / "demo", pid=pid)
    sibling.mkdir()
    users = user_files_named_like_temporaries(tmp_path, pid)
    code, err = run_command(MAKE_DEMO, [str(tmp_path / "demo")])
    assert code == 0, err
    assert not sibling.exists() and all(path.read_text() == "the user's" for path in users)


def user_files_named_like_temporaries(folder: Path, pid: int) -> list[Path]:
    """A user's files and folders whose names look like the temporaries of hf_mmkd <= 0.x (`.NAME.tmp-N-WORD`,
    `.NAME.old-N-WORD`), of processes that do not run (one with a pid beyond any integer a kernel gives out)."""
    folder.mkdir(exist_ok=True)
    photos = folder / ".photos.old-4242-summer"
    photos.mkdir()
    made = [folder / ".zshrc.old-2019-backup", photos / "beach.jpg", folder / f".student.tmp-{pid}-a1b2c3d4",
            folder / ".demo.tmp-99999999999999999999999-x", folder / f".demo.hf_mmkd-tmp-{pid}-0123456789abcdef"]
    for path in made:
        path.write_text("the user's")
    return made


@pytest.mark.parametrize("command", ["evaluate", "predict", "prepare_mmsa"])
def test_no_command_deletes_user_files_named_like_temporaries(tmp_path, command):
    """`evaluate --out DIR`, `predict --out DIR/p.json` and `prepare_mmsa.py PKL DIR/OUT` clean only what hf_mmkd
    provably left behind: a user's `.zshrc.old-2019-backup` and `.photos.old-4242-summer/` survive, and a huge
    pid is no OverflowError."""
    folder = tmp_path / "dir"
    users = user_files_named_like_temporaries(folder, dead_pid())
    data = small_demo(tmp_path, mutate=lambda d: d.__class__({**d, "test": d["validation"]}))
    argv = {"evaluate": (HF_MMKD, ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2", "--rates",
                                   "0.0", "--seeds", "1", "--out", str(folder), "--quiet"]),
            "predict": (HF_MMKD, ["predict", str(_checkpoint()), "--dataset", data, "--out", str(folder / "p.json")]),
            "prepare_mmsa": (PREPARE_MMSA, [str(write_pickle(tmp_path / "in.pkl")), str(folder / "demo")])}[command]
    code, err = run_command(*argv)
    assert code == 0, err[-3000:]
    assert all(path.read_text() == "the user's" for path in users)


# ---- the teacher provenance record ------------------------------------------------------------------------------


def test_teacher_is_reused_only_when_its_provenance_matches(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--output_dir", str(out), *QUICK]
    assert train_main([*base, "--stage", "teacher"]) == 0
    record = read_json(out / "teacher" / PROVENANCE_FILE)
    assert record["version"] == 1 and record["data"]["fingerprint"].startswith("datasets:")
    assert record["model"]["hidden_size"] == 8 and "pattern_embedding" not in record["model"]
    assert record["training"]["num_train_epochs"] == 1 and record["training"]["seed"] == 1111
    assert record["result"] == {"global_step": 1}
    weights = (out / "teacher" / "model.safetensors").read_bytes()
    capsys.readouterr()

    # Same data and arguments: the skip is said in the normal output, and the teacher is kept.
    assert train_main([*base, "--method", "logit"]) == 0
    assert "teacher stage skipped: reusing the teacher in" in capsys.readouterr().out
    assert (out / "teacher" / "model.safetensors").read_bytes() == weights

    # Another width: stop, say what differs and how to go on; nothing is trained.
    assert train_main([*base, "--hidden_size", "16"]) == 1
    err = capsys.readouterr().err
    assert "(model.hidden_size: 8 -> 16): pass --reuse_teacher never to train a new teacher" in err
    assert (out / "teacher" / "model.safetensors").read_bytes() == weights

    # On purpose: retrain in its place, or reuse a teacher trained on other rows as it is.
    assert train_main([*base, "--hidden_size", "16", "--reuse_teacher", "never", "--stage", "teacher"]) == 0
    assert read_json(out / "teacher" / PROVENANCE_FILE)["model"]["hidden_size"] == 16
    assert train_main([*base, "--hidden_size", "16", "--max_train_samples", "6", "--method", "logit"]) == 1
    assert "data.max_train_samples: 8 -> 6" in capsys.readouterr().err
    assert train_main([*base, "--hidden_size", "16", "--max_train_samples", "6", "--method", "logit",
                       "--reuse_teacher", "always"]) == 0
    assert "although data.max_train_samples: 8 -> 6" in capsys.readouterr().out


def test_a_spec_edited_after_the_teacher_was_trained_does_not_reuse_it(tmp_path, capsys):
    """The data fingerprint covers dataset_spec.json: another neutral band or label range is other data."""
    data = small_demo(tmp_path)
    base = ["--output_dir", str(tmp_path / "run"), *QUICK, "--dataset", data]
    assert train_main([*base, "--stage", "teacher"]) == 0
    fingerprint = read_json(tmp_path / "run" / "teacher" / PROVENANCE_FILE)["data"]["fingerprint"]
    assert ":spec-" in fingerprint
    spec = read_json(Path(data) / "dataset_spec.json")
    spec["label_range"], spec["neutral_band"] = [-4.0, 4.0], [-1.0, 1.0]
    (Path(data) / "dataset_spec.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert train_main([*base, "--method", "logit"]) == 1
    assert "data.fingerprint: " in capsys.readouterr().err


def test_every_skipped_stage_is_said_in_the_normal_output(tmp_path, capsys):
    assert train_main(["--output_dir", str(tmp_path / "a"), *QUICK, "--method", "none"]) == 0
    assert "teacher stage skipped: method 'none' trains no separate teacher" in capsys.readouterr().out
    assert train_main(["--output_dir", str(tmp_path / "b"), *QUICK, "--stage", "teacher"]) == 0
    assert "student stage skipped: --stage teacher" in capsys.readouterr().out


# ---- evaluate: a subset of P2's rates; publish: the release is checked before the upload --------------------------


def test_p2_with_a_subset_of_rates_gives_a_report_that_names_them(tmp_path):
    data = small_demo(tmp_path, mutate=lambda d: d.__class__({**d, "test": d["validation"]}))
    code, err = run_command(HF_MMKD, ["evaluate", str(_checkpoint()), "--dataset", data, "--protocol", "p2",
                                      "--rates", "0.0", "0.5", "--seeds", "1", "2", "--out", str(tmp_path / "r")])
    assert code == 0, err
    payload = json.loads((tmp_path / "r" / "hf_mmkd_synthetic_demo_p2.json").read_text())
    summary = payload["summary"]["features"]
    assert list(summary["summary"]) == ["mean r=0.0,0.5"]
    for metric in ("MAE", "Non0_acc_2"):
        per_seed = payload["results"]["checkpoints"]["features"]
        want = np.mean([np.mean([per_seed[s][c][metric] for c in ("r=0.0", "r=0.5")]) for s in ("1", "2")])
        assert summary["summary"]["mean r=0.0,0.5"][metric]["mean"] == pytest.approx(want)
    assert "**mean r=0.0,0.5**" in (tmp_path / "r" / "hf_mmkd_synthetic_demo_p2.md").read_text()


def _nothing_uploaded(api) -> None:
    """No repository created and no file sent (the access preflight's read-only `whoami` may have run)."""
    api.return_value.create_repo.assert_not_called()
    api.return_value.upload_folder.assert_not_called()


def test_publish_checks_the_release_before_uploading(tmp_path, online):
    bad = tmp_path / "ckpt"
    shutil.copytree(_checkpoint(), bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "hidden_size": 16}))
    with mock.patch("hf_mmkd.hub.HfApi") as api:
        code, err = run_command(HF_MMKD, ["publish", str(bad), "--repo-id", "me/x"])
    assert code == 1
    one_error_line(err, "config.json does not match its weights: ")
    _nothing_uploaded(api)
    shutil.copytree(_checkpoint(), tmp_path / "code")  # shipped code that does not run: the library's would
    (tmp_path / "code" / "modeling_mmkd.py").write_text("raise ImportError('broken on purpose')\n")
    with mock.patch("hf_mmkd.hub.HfApi") as api:
        code, err = run_command(HF_MMKD, ["publish", str(tmp_path / "code"), "--repo-id", "me/x"])
    assert code == 1
    one_error_line(err, "the release's code does not load (ImportError: broken on purpose)")
    _nothing_uploaded(api)
    with mock.patch("hf_mmkd.hub.HfApi") as api:  # the same checkpoint, whole: uploaded
        code, err = run_command(HF_MMKD, ["publish", str(_checkpoint()), "--repo-id", "me/x"])
    assert code == 0, err
    assert api.return_value.upload_folder.call_args.kwargs["ignore_patterns"] == [MANIFEST]


def test_disk_full_while_saving_a_trainer_checkpoint_names_the_run_folder(tmp_path, monkeypatch):
    """save_pretrained's copy of the model code is where a full disk may strike first: the error names the run's
    checkpoint folder and says the disk is full, not `.../checkpoint-1/modeling_mmkd.py` alone."""
    copy = shutil.copyfile

    def full_at_the_code(src, dst, *args, **kwargs):
        if str(dst).endswith("modeling_mmkd.py"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return copy(src, dst, *args, **kwargs)
    monkeypatch.setattr(shutil, "copyfile", full_at_the_code)
    out = tmp_path / "run"
    code, err = run_command(TRAIN, ["--output_dir", str(out), *QUICK, "--stage", "teacher", "--save_strategy", "steps",
                                    "--save_steps", "1"])
    assert code == 1
    one_error_line(err, f"cannot write the checkpoints in {out / 'teacher_run'}: no space left on the device (disk full)")
    assert "modeling_mmkd.py" not in err and not (out / "teacher").exists()
