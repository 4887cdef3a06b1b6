"""`hf-mmkd` CLI: evaluate (in process and as the console script), publish (dry run, mocked upload),
`train.py --push_to_hub` (mocked), and the error exit codes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import ModelCard
from test_evaluation import make_checkpoint, make_dataset

from hf_mmkd import cli
from hf_mmkd.evaluation import evaluate_checkpoints
from hf_mmkd.metrics import COMPLETE_SET, P3_SETS
from tiny import feature_batch


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A prepared dataset, two tiny checkpoints and one `hf-mmkd evaluate` run (P2, two seeds) on them."""
    data = make_dataset(tmp_path_factory)
    root = tmp_path_factory.mktemp("ckpts")
    teacher, student = make_checkpoint(root / "teacher", seed=0), make_checkpoint(root / "student", seed=1)
    out = root / "report"
    code = cli.main(["evaluate", str(teacher), str(student), "--dataset", str(data), "--protocol", "P2",
                     "--seeds", "1111", "1112", "--out", str(out)])
    assert code == 0
    return {"data": data, "teacher": teacher, "student": student, "report": out}


def test_evaluate_writes_report_and_matches_the_api(setup, capsys):
    out = setup["report"]
    assert sorted(p.name for p in out.iterdir()) == ["mosi_tiny_p2.json", "mosi_tiny_p2.md", "mosi_tiny_p2.png"]
    payload = json.loads((out / "mosi_tiny_p2.json").read_text())
    res = payload["results"]
    assert res["protocol"] == "p2" and list(res["checkpoints"]) == ["teacher", "student", res["reference"]]
    assert payload["summary"]["student"]["n_seeds"] == 2
    direct = evaluate_checkpoints({"student": setup["student"]}, setup["data"], "p2", seeds=(1112,), rates=(0.0, 0.4))
    for cond in ("r=0.0", "r=0.4"):
        assert res["checkpoints"]["student"]["1112"][cond] == direct["checkpoints"]["student"]["1112"][cond]
    md = (out / "mosi_tiny_p2.md").read_text()
    assert "| teacher (2 seeds) | r=0.0 |" in md and "**mean r=0.0-0.9**" in md
    assert (out / "mosi_tiny_p2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_console_script_p3(setup, tmp_path):
    exe = Path(sys.executable).parent / "hf-mmkd"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "hf_mmkd.cli"]
    proc = subprocess.run(cmd + ["evaluate", str(setup["teacher"]), "--dataset", str(setup["data"]), "--protocol",
                                 "p3", "--seeds", "1111", "--names", "T", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    for cond in P3_SETS + (COMPLETE_SET,):
        assert f"| T (1 seed) | {cond} |" in proc.stdout
    assert "**Avg. (6 sets)**" in proc.stdout
    assert (tmp_path / "mosi_tiny_p3.png").is_file() and (tmp_path / "mosi_tiny_p3.json").is_file()


def test_publish_dry_run_release_loads_with_remote_code(setup, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    results = setup["report"] / "mosi_tiny_p2.json"
    release = tmp_path / "release"
    code = cli.main(["publish", str(setup["student"]), "--repo-id", "me/mmkd-student", "--results", str(results),
                     "--dry-run", "--out", str(release)])
    assert code == 0
    assert "dry run: nothing uploaded" in capsys.readouterr().out
    files = sorted(os.listdir(release))
    assert files == ["README.md", "config.json", "configuration_mmkd.py", "model.safetensors", "modeling_mmkd.py",
                     "mosi_tiny_p2.json", "mosi_tiny_p2.png"]
    card = ModelCard.load(release / "README.md")
    configs = {e.metric_config for e in card.data.eval_results}
    assert {"p2 r=0.0", "p2 r=0.9", "p2 mean r=0.0-0.9"} <= configs  # the student's numbers, found by its path
    assert "![Robustness to missing modalities](mosi_tiny_p2.png)" in card.text
    for code_file in ("configuration_mmkd.py", "modeling_mmkd.py"):  # the code the Hub copy runs
        assert (release / code_file).read_bytes() == (setup["student"] / code_file).read_bytes()
    loaded = AutoModelForSequenceClassification.from_pretrained(release, trust_remote_code=True).eval()
    original = AutoModelForSequenceClassification.from_pretrained(setup["student"]).eval()
    batch = feature_batch(dims=(6, 4, 3), labels=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, original(**batch).logits)


def test_publish_uploads_with_hfapi(setup, tmp_path):
    seen = {}

    def upload_folder(**kwargs):
        seen["files"] = sorted(os.listdir(kwargs["folder_path"]))
        return "commit-info"

    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = upload_folder
        code = cli.main(["publish", str(setup["teacher"]), "--repo-id", "org/teacher", "--private",
                         "--results", str(setup["report"] / "mosi_tiny_p2.json"), "--checkpoint-name", "teacher"])
    assert code == 0
    api = api_cls.return_value
    api.create_repo.assert_called_once_with(repo_id="org/teacher", repo_type="model", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "org/teacher" and kwargs["repo_type"] == "model"
    assert "README.md" in seen["files"] and "model.safetensors" in seen["files"] and "mosi_tiny_p2.png" in seen["files"]
    assert not Path(kwargs["folder_path"]).exists()  # the temporary release folder is cleaned up


def test_train_push_to_hub_publishes_the_release_once(tmp_path):
    from hf_mmkd import training

    out = tmp_path / "run"
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:
        training.main(["--output_dir", str(out), "--method", "logit", "--num_train_epochs", "1",
                       "--max_train_samples", "16", "--max_eval_samples", "16", "--save_strategy", "no",
                       "--eval_strategy", "no", "--push_to_hub", "--hub_model_id", "me/demo-student"])
    api = api_cls.return_value
    api.create_repo.assert_called_once()  # only our release push: the Trainer never created or pushed a repo
    assert api.create_repo.call_args.kwargs["repo_id"] == "me/demo-student"
    assert api.upload_folder.call_args.kwargs["folder_path"] == str(out / "release")
    card = ModelCard.load(out / "release" / "README.md")
    assert any(e.metric_config == "p2 mean r=0.0-0.9" for e in card.data.eval_results)
    assert (out / "release" / "hf_mmkd_synthetic_demo_p2.png").is_file()
    assert (out / "evaluation" / "hf_mmkd_synthetic_demo_p2.json").is_file()


@pytest.mark.parametrize("case", ["missing_ckpt", "no_weights", "no_config", "protocol", "p4", "split", "dry_run",
                                  "bad_results", "predict_nothing", "usage"])
def test_errors_exit_nonzero_with_a_message(setup, tmp_path, capsys, case):
    data, teacher = str(setup["data"]), str(setup["teacher"])
    broken = tmp_path / "broken"
    shutil.copytree(teacher, broken)
    evaluate = ["evaluate", "--dataset", data, "--out", str(tmp_path / "o")]
    argv, expected = {
        "missing_ckpt": (evaluate + [str(tmp_path / "nope"), "--protocol", "p2"], "does not exist"),
        "no_weights": (evaluate + [str(broken), "--protocol", "p2"], "has no weights"),
        "no_config": (evaluate + [str(broken), "--protocol", "p2"], "has no config.json"),
        "protocol": (evaluate + [teacher, "--protocol", "p7"], "unknown protocol 'p7'"),
        "p4": (evaluate + [teacher, "--protocol", "p4"], "no evaluation conditions of its own"),
        "split": (evaluate + [teacher, "--protocol", "p2", "--split", "dev"], "has no 'dev' split"),
        "dry_run": (["publish", teacher, "--repo-id", "me/x", "--dry-run"], "needs --out"),
        "bad_results": (["publish", teacher, "--repo-id", "me/x", "--results", str(tmp_path / "r.json")],
                        "results file"),
        "predict_nothing": (["predict", teacher], "predict"),
        "usage": (["evaluate", teacher], "required"),
    }[case]
    if case == "no_weights":
        (broken / "model.safetensors").unlink()
    if case == "no_config":
        (broken / "config.json").unlink()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert expected in err and "error" in err
    assert not (tmp_path / "o").exists()  # nothing half-written
