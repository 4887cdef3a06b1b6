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
from tiny import assert_honest_card, feature_batch


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
    assert sorted(p.name for p in out.iterdir()) == [".hf_mmkd_outputs.json", "mosi_tiny_p2.json", "mosi_tiny_p2.md",
                                                     "mosi_tiny_p2.png"]
    payload = json.loads((out / "mosi_tiny_p2.json").read_text())
    res = payload["results"]
    assert res["protocol"] == "p2" and list(res["checkpoints"]) == ["teacher", "student", res["reference"]]
    assert payload["summary"]["student"]["n_seeds"] == 2
    direct = evaluate_checkpoints({"student": setup["student"]}, setup["data"], "p2", seeds=(1112,), rates=(0.0, 0.4))
    for cond in ("r=0.0", "r=0.4"):
        assert res["checkpoints"]["student"]["1112"][cond] == direct["checkpoints"]["student"]["1112"][cond]
    md = (out / "mosi_tiny_p2.md").read_text()
    assert "| teacher (2 seeds) | r=0.5 |" in md and "**mean r=0.0-0.9**" in md
    assert res["fixed_conditions"] == ["r=0.0"] and "| teacher (1 run) | r=0.0 |" in md  # drawn once, copied
    assert (out / "mosi_tiny_p2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_p4_with_a_progress_bar_and_draw_free_conditions_once(setup, tmp_path, capsys, monkeypatch):
    from hf_mmkd import evaluation
    from hf_mmkd.metrics import P4_RATES

    out = tmp_path / "p4"
    assert cli.main(["evaluate", str(setup["student"]), "--dataset", str(setup["data"]), "--protocol", "p4",
                     "--seeds", "1111", "1112", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "14/14" in err and "condition" in err  # tqdm over (seed, condition) on stderr: 2 seeds x 7 MR
    payload = json.loads((out / "mosi_tiny_p4.json").read_text())
    seeds = payload["results"]["checkpoints"]["student"]
    assert list(seeds["1111"]) == [f"r={r}" for r in P4_RATES]
    assert seeds["1111"] != seeds["1112"]  # whole modalities drawn per row and seed
    mean = payload["summary"]["student"]["summary"]["mean MR=0.1-0.7"]["MAE"]["mean"]
    per_seed = [sum(c["MAE"] for c in conds.values()) / len(P4_RATES) for conds in seeds.values()]
    assert mean == pytest.approx(sum(per_seed) / 2)
    again = evaluate_checkpoints({"student": setup["student"]}, setup["data"], "p4", seeds=(1112,))
    assert again["checkpoints"]["student"]["1112"] == seeds["1112"]  # deterministic per row and seed
    assert "**mean MR=0.1-0.7**" in (out / "mosi_tiny_p4.md").read_text()

    # --quiet: no bar; r = 0 draws nothing, so it is run once per checkpoint whatever the number of seeds
    calls = []
    predict = evaluation._predict
    monkeypatch.setattr(evaluation, "_predict", lambda model, batches, sim: calls.append(sim.rate) or
                        predict(model, batches, sim))
    assert cli.main(["evaluate", str(setup["student"]), "--dataset", str(setup["data"]), "--protocol", "p1",
                     "--seeds", "1111", "1112", "1113", "--rates", "0.0", "0.5", "--out", str(tmp_path / "q"),
                     "--quiet"]) == 0
    assert "condition" not in capsys.readouterr().err and sorted(calls) == [0.0, 0.5, 0.5, 0.5]


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
    assert files == [".hf_mmkd_outputs.json", "README.md", "config.json", "configuration_mmkd.py", "model.safetensors",
                     "modeling_mmkd.py", "mosi_tiny_p2.json", "mosi_tiny_p2.png", "pipeline_mmkd.py",
                     "processing_mmkd.py"]  # the model code imports the processor's module
    card = ModelCard.load(release / "README.md")
    configs = {e.metric_config for e in card.data.eval_results}
    assert {"p2 r=0.0", "p2 r=0.9", "p2 mean r=0.0-0.9"} <= configs  # the student's numbers, found by its path
    assert "![Robustness to missing modalities](mosi_tiny_p2.png)" in card.text
    assert_honest_card(card.text, None, (release / "config.json").read_text())
    for code_file in ("configuration_mmkd.py", "modeling_mmkd.py", "pipeline_mmkd.py"):  # the code the Hub copy runs
        assert (release / code_file).read_bytes() == (setup["student"] / code_file).read_bytes()
    loaded = AutoModelForSequenceClassification.from_pretrained(release, trust_remote_code=True).eval()
    original = AutoModelForSequenceClassification.from_pretrained(setup["student"]).eval()
    batch = feature_batch(dims=(6, 4, 3), labels=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, original(**batch).logits)


def test_publish_uploads_with_hfapi(setup, tmp_path, online):
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


def test_train_push_to_hub_publishes_the_release_once(tmp_path, online):
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
    assert_honest_card(card.text, "hf_mmkd synthetic demo", (out / "release" / "config.json").read_text())
    assert "**Validation**" in card.text and "total_loss" not in card.text  # train.py's summary reached the card


def _hub_env(tmp_path, **changes):
    """The environment of a user whose Hub is unreachable: HF_ENDPOINT at a closed localhost port, no token."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf_home"), **changes)
    return env


@pytest.mark.parametrize("case, env, message", [
    ("no token", {}, "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN or pass --token"),
    ("unreachable", {"HF_TOKEN": "hf_x"}, "the Hub at http://127.0.0.1:9 is not reachable with this token"),
    ("offline", {"HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set: cannot upload to the Hub"),
])
def test_publish_without_hub_fails_in_one_line_before_any_work(setup, tmp_path, case, env, message):
    exe = Path(sys.executable).parent / "hf-mmkd"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "hf_mmkd.cli"]
    out = tmp_path / "release"
    proc = subprocess.run(cmd + ["publish", str(setup["student"]), "--repo-id", "me/x", "--out", str(out)],
                          capture_output=True, text=True, env=_hub_env(tmp_path, **env), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"hf-mmkd publish: error: {proc.stderr.split(': error: ')[1].strip()}"]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing built


def test_train_push_to_hub_without_hub_fails_before_training(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from hf_mmkd import training

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), "--method", "logit", "--push_to_hub", "--hub_model_id", "me/x"]
    assert training.main(argv) == 1
    assert "train.py: error: no Hugging Face token" in capsys.readouterr().err
    assert training.main(argv + ["--hub_token", "hf_x"]) == 1
    err = capsys.readouterr().err
    assert "train.py: error: the Hub at http://127.0.0.1:9 is not reachable" in err and len(err.splitlines()) == 1
    assert not out.exists()  # no stage ran


def test_failed_upload_names_the_built_release_folder(setup, tmp_path, online, capsys):
    out = tmp_path / "release"
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = ConnectionError("connection reset by peer")
        code = cli.main(["publish", str(setup["student"]), "--repo-id", "me/x", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"upload to me/x failed (ConnectionError: connection reset by peer); the release folder is kept at {out}" in err
    assert (out / "config.json").is_file()  # built, kept, named
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:  # without --out the folder was temporary: say so
        api_cls.return_value.upload_folder.side_effect = ConnectionError("reset")
        assert cli.main(["publish", str(setup["student"]), "--repo-id", "me/x"]) == 1
    assert "the release folder was temporary; pass --out DIR to keep it" in capsys.readouterr().err


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
        "p4": (evaluate + [teacher, "--protocol", "p4", "--rates", "0.05"], "p4 (IMDer) has missing rates MR in"),
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


def test_predict_out_never_replaces_a_file_hf_mmkd_did_not_write(setup, tmp_path, capsys):
    """`predict --dataset --out FILE`: a user's FILE is refused (with --overwrite too) and left as it was; a FILE
    that an earlier predict wrote (listed in the folder's manifest) is replaced only with --overwrite; a folder,
    or a FILE inside the checkpoint, is refused before any prediction."""
    data, teacher, student = str(setup["data"]), str(setup["teacher"]), str(setup["student"])
    mine = tmp_path / "preds.json"
    mine.write_text("my own notes\n")
    for extra in ([], ["--overwrite"]):
        assert cli.main(["predict", teacher, "--dataset", data, "--out", str(mine), *extra]) == 1
        err = capsys.readouterr().err
        assert err.splitlines() == [f"hf-mmkd predict: error: --out {mine} exists and was not written by hf_mmkd (it "
                                    f"is not listed in {tmp_path / '.hf_mmkd_outputs.json'}); hf_mmkd never replaces "
                                    "it, even with --overwrite: move it away or choose another file"]
        assert mine.read_text() == "my own notes\n"

    out = tmp_path / "teacher.json"
    assert cli.main(["predict", teacher, "--dataset", data, "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    assert len(first) == 24 and first[0]["id"] == "demo_test_0"
    assert json.loads((tmp_path / ".hf_mmkd_outputs.json").read_text())["entries"] == {"teacher.json": "hf-mmkd predict"}
    capsys.readouterr()
    assert cli.main(["predict", student, "--dataset", data, "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"hf-mmkd predict: error: --out {out} exists (written by hf-mmkd predict); pass --overwrite to replace it"]
    assert json.loads(out.read_text()) == first
    assert cli.main(["predict", student, "--dataset", data, "--out", str(out), "--overwrite"]) == 0
    second = json.loads(out.read_text())
    assert [r["id"] for r in second] == [r["id"] for r in first] and second != first  # the student's scores now
    assert mine.read_text() == "my own notes\n"
    capsys.readouterr()

    for bad, message in ((tmp_path, f"--out {tmp_path} is a folder; give the path of the file to write"),
                         (Path(teacher) / "p.json", f"--out {Path(teacher) / 'p.json'} lies inside the input "
                                                    f"{teacher}: hf-mmkd predict never writes over or into its inputs")):
        assert cli.main(["predict", teacher, "--dataset", data, "--out", str(bad), "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (Path(teacher) / "p.json").exists() and not (Path(teacher) / ".hf_mmkd_outputs.json").exists()
