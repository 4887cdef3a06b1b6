"""The README's examples cannot drift from the code: every Python block runs, and every shell command either runs
(on the demo data, with tiny training settings appended) or is listed in SKIPPED with the reason it cannot run
here. A command in the README that this file does not know fails the test."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MOSI_PKL, REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
# The "bring your own data" block is run, command by command, by tests/test_any_dataset.py on data sets it builds.
OWN_DATA = re.compile(r"<!-- own-data:start -->.*?<!-- own-data:end -->", re.S)
BIN = Path(sys.executable).parent
# Appended to the README's training command: the same job, a few seconds long.
TINY = ["--num_train_epochs", "1", "--max_train_samples", "64", "--max_eval_samples", "32",
        "--per_device_eval_batch_size", "64"]
MAIN_JOB = ".venv/bin/accelerate launch -q --config_file configs/accelerate/default.yaml train.py"
# The README's paths of real-data outputs -> what the demo run wrote (these must be paths a config really writes).
DEMO_PATHS = {"outputs/mosi_teacher/teacher": "outputs/demo/teacher", "outputs/mosi_corrkd/student":
              "outputs/demo/student", "data_prepared/mosi": "demo",
              "reports/mosi/CMU-MOSI_p2.json": "reports/mosi/hf_mmkd_synthetic_demo_p2.json"}
SKIPPED = {
    "python3 -m venv .venv": "creates the environment this suite runs in",
    ".venv/bin/pip install": "installs packages (checked by the fresh-clone run of the set-up command)",
    ".venv/bin/python -m pytest -q": "this test suite itself",
    ".venv/bin/accelerate launch -q --config_file configs/accelerate/default.yaml train.py --config configs/mosi_":
        "trains on CMU-MOSI for minutes; the config is parsed and its paths checked instead",
    ".venv/bin/hf-mmkd predict outputs/mosi_corrkd/student --text":
        "needs the MOSI checkpoint (MiniLM text backbone); test_inference covers --text with a tiny BERT",
    ".venv/bin/python benchmarks/": "hour-long benchmark runs (tests/test_quality_benchmark.py covers the script)",
    ".venv/bin/hf-mmkd demo": "serves a page until interrupted; tests/test_demo_app.py starts it and drives it in "
                              "headless Chromium",
}


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", OWN_DATA.sub("", README), re.S)


def shell_commands() -> list[str]:
    """Every command of the README's bash blocks (continuations joined, comments dropped, `&&` chains split)."""
    out = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out += [c.strip() for c in line.split("&&")]
    return out


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return proc


def as_argv(command: str, work: Path, demo: bool = True) -> list[str]:
    """A README command as run here: the venv's executables, the repo's files, demo paths for real-data ones."""
    for real, replacement in DEMO_PATHS.items() if demo else ():
        command = command.replace(real, replacement)
    argv = shlex.split(command)
    argv[0] = str(BIN / Path(argv[0]).name) if argv[0].startswith(".venv/bin/") else argv[0]
    # The repo's own files (scripts, configs, ../shared data) by absolute path; what the commands write
    # (data_prepared/, outputs/) stays relative to the work folder even where a developer's checkout has them.
    written = ("data_prepared", "outputs")
    return [str(REPO_ROOT / a) if ((REPO_ROOT / a).exists() and "/" in a and a.split("/")[0] not in written)
            or a == "train.py" else a for a in argv]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder where the README's main job has run (tiny settings appended): outputs/demo/{teacher,student}."""
    work = tmp_path_factory.mktemp("readme")
    commands = [c for c in shell_commands() if c.startswith(MAIN_JOB) and "--config " not in c]
    assert commands == [MAIN_JOB], commands  # the set-up command ends with the main job on its defaults
    proc = run(as_argv(MAIN_JOB, work) + TINY, work)
    assert "were not passed to `accelerate launch`" not in proc.stderr  # the shipped launch config is complete
    assert "[student]" in proc.stdout and "total_loss_task_plus_distillation" in proc.stdout
    return work


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    known = [MAIN_JOB, ".venv/bin/python dataset_scripts/prepare_mmsa.py", ".venv/bin/hf-mmkd evaluate",
             ".venv/bin/hf-mmkd predict outputs/demo/student", ".venv/bin/hf-mmkd publish", *SKIPPED]
    unknown = [c for c in shell_commands() if not any(c.startswith(k) for k in known)]
    assert not unknown, f"README commands that tests/test_readme.py neither runs nor skips: {unknown}"
    # accelerate is the venv's, wherever the README names it (also in running text)
    assert not re.findall(r"(?<!\.venv/bin/)\baccelerate launch\b", README)


def test_readme_real_data_commands_match_the_configs():
    """The MOSI commands parse, and the teacher the evaluate example names is the one the teacher config writes."""
    from hf_mmkd.training import parse_args

    for command in shell_commands():
        if "--config configs/" in command:
            path = command.split("--config ")[1].split()[0]
            _, data_args, _, args = parse_args(["--config", str(REPO_ROOT / path)])
            assert data_args.dataset == "data_prepared/mosi"
    _, _, _, teacher = parse_args(["--config", str(REPO_ROOT / "configs" / "mosi_teacher.yaml")])
    _, _, _, corrkd = parse_args(["--config", str(REPO_ROOT / "configs" / "mosi_corrkd.yaml")])
    evaluate = next(c for c in shell_commands() if c.startswith(".venv/bin/hf-mmkd evaluate"))
    assert f"{teacher.output_dir}/teacher" in evaluate and corrkd.teacher_name_or_path == f"{teacher.output_dir}/teacher"
    assert f"{corrkd.output_dir}/student" in evaluate


def test_readme_python_blocks_and_cli_examples_run(work, monkeypatch, capsys):
    """In this process (the commands' own console scripts are exercised in test_cli): every Python block, then the
    CLI examples in README order."""
    from hf_mmkd import cli

    monkeypatch.chdir(work)
    blocks = code_blocks("python")
    assert len(blocks) >= 4
    for block in blocks:  # pipeline, direct call, the .npz for --features, the evaluate metric module
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert (work / "example.npz").is_file()
    ran = []
    for command in shell_commands():
        if command.startswith(".venv/bin/python dataset_scripts/prepare_mmsa.py"):
            if not MOSI_PKL.is_file():
                pytest.fail(f"{MOSI_PKL} not found")
            run(as_argv(command.replace("../shared/data/mosi/mosi_text_audio.pkl", str(MOSI_PKL)), work, demo=False),
                work)
        elif command.startswith((".venv/bin/hf-mmkd evaluate", ".venv/bin/hf-mmkd predict outputs/demo")):
            assert cli.main(as_argv(command, work)[1:]) == 0, capsys.readouterr().err
        elif command.startswith(".venv/bin/hf-mmkd publish"):  # no Hub here: build the release folder only
            assert cli.main(as_argv(command, work)[1:] + ["--dry-run", "--out", "release"]) == 0
        else:
            continue
        ran.append(command.split()[1] + " " + command.split()[2])
    assert ran == ["dataset_scripts/prepare_mmsa.py ../shared/data/mosi/mosi_text_audio.pkl",
                   "evaluate outputs/mosi_teacher/teacher", "predict outputs/demo/student",
                   "predict outputs/demo/student", "publish outputs/mosi_corrkd/student"]
    assert (work / "data_prepared" / "mosi" / "README.md").is_file()
    assert (work / "reports" / "mosi" / "hf_mmkd_synthetic_demo_p2.json").is_file()
    assert (work / "demo_preds.csv").is_file()
    assert (work / "release" / "pipeline_mmkd.py").is_file() and (work / "release" / "README.md").is_file()


def test_doc_references_in_the_code_resolve_to_the_repositorys_docs():
    """Docstrings cite docs/methods.md / docs/protocols.md sections, never a document outside the repository."""
    anchors = {}
    for doc in ("methods", "protocols"):
        text = (REPO_ROOT / "docs" / f"{doc}.md").read_text()
        anchors[doc] = set(re.findall(r'<a id="([^"]+)">', text))
    assert {"baselines", "mm-ckd", "corrkd", "mitr-dnet", "cross-modal-kd"} <= anchors["methods"]
    assert {f"p{i}" for i in range(1, 6)} | {"metrics", "mmsa-layout"} <= anchors["protocols"]
    methods = (REPO_ROOT / "docs" / "methods.md").read_text()
    assert methods.count("### Departures from the paper") == 5
    sources = [p for d in ("hf_mmkd", "modeling", "tests") for p in (REPO_ROOT / d).rglob("*.py")
               if p.name != "test_readme.py"]
    for path in sources:
        text = path.read_text()
        assert "doc §" not in text and "methods-and-results" not in text, path
        for doc, anchor in re.findall(r"docs/(methods|protocols)\.md#([\w-]+)", text):
            assert anchor in anchors[doc], f"{path.name} cites docs/{doc}.md#{anchor}, which does not exist"


def test_readme_prediction_files_are_distinct():
    """Run one after the other (own data, then the demo), no two README `predict --out` commands write the same
    file: the second would be refused (predict never replaces a file without --overwrite)."""
    every = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S) for line in block.splitlines()]
    outs = [shlex.split(c)[shlex.split(c).index("--out") + 1] for c in every if "hf-mmkd predict" in c and "--out" in c]
    assert len(outs) >= 2 and len(set(outs)) == len(outs), outs


def test_readme_launch_path_error_is_one_line(tmp_path):
    """The README's `accelerate launch` command, run for real, with a bad flag: train.py's one error line on
    stderr and a non-zero status, no accelerate traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(as_argv(MAIN_JOB, tmp_path) + ["--stage", "teachers"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert errors == ["train.py: error: stage must be teacher, student or both, got 'teachers'"], proc.stderr[-3000:]


def test_docs_pages_commands_are_run_where_they_live():
    """The README links to docs/ for details; the only docs page with commands is docs/scaling.md, whose CPU
    commands tests/test_scale_out.py runs and whose GPU templates it checks. A code block added to another page
    must get a test too: this one names it."""
    pages = {p.name: p.read_text() for p in sorted((REPO_ROOT / "docs").glob("*.md"))}
    with_code = sorted(name for name, text in pages.items() if "```" in text)
    assert with_code == ["scaling.md"], with_code
    for page in ("usage", "training", "scaling", "data", "evaluation", "demo", "benchmarks", "metrics", "files",
                 "errors", "methods", "protocols"):
        assert f"(docs/{page}.md)" in README, page  # every page is linked from the front door
