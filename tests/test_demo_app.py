"""`hf-mmkd demo` (hf_mmkd.demo_app): the page's handlers on regression / class checkpoints and two- or three-
modality sets, its answers against `hf-mmkd predict`, the P2 slider, errors as one line, the Space folder of
`hf-mmkd publish --space`, and the real page in headless Chromium (Debian's chromium + chromium-driver through
Selenium; `.ci/run` installs them when they are absent)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from unittest import mock
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from test_processing import stats, tiny_tokenizer
from tiny import backbone_config_kwargs, feature_config_kwargs

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.cli import main as cli_main
from hf_mmkd.data.demo import demo_spec, make_demo_dataset
from hf_mmkd.hub import upload
from hf_mmkd.inference import build_processor, predict

gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")

from hf_mmkd.demo_app import DemoSession, build_app, load_for_demo  # noqa: E402

HF_MMKD = Path(sys.executable).with_name("hf-mmkd")


def save(folder: Path, **config_kwargs) -> Path:
    torch.manual_seed(0)
    config = MMKDConfig(**config_kwargs)
    model = MMKDForSentiment(config)
    with torch.no_grad():  # a head that answers visibly differently per input (a fresh one is near 0)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer = tiny_tokenizer() if config.encoder_kind("text") == "backbone" else None
    build_processor(config, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def text_audio_kwargs():
    """Text through a tiny BERT + 8-d audio features (the demo set's width), the MOSI layout (no vision), with the
    demo set's spec."""
    return dict(text_config=backbone_config_kwargs()["text_config"], audio_feature_dim=8, hidden_size=16,
                num_attention_heads=2, feature_standardization=stats({"audio": 8}),
                dataset_spec=demo_spec(make_demo_dataset(seed=0), seed=0).to_dict())


@pytest.fixture(scope="module")
def text_audio_ckpt(tmp_path_factory):
    return save(tmp_path_factory.mktemp("text_audio"), **text_audio_kwargs())


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """{modality: .npz path} of one feature sequence per modality (widths of tests/tiny.py), and "audio8": 8-d
    audio features for the text + audio checkpoint."""
    folder, rng = tmp_path_factory.mktemp("npz"), np.random.default_rng(3)
    out = {}
    for name, m, d in (("text", "text", 7), ("audio", "audio", 5), ("vision", "vision", 6), ("audio8", "audio", 8)):
        out[name] = folder / f"{name}.npz"
        np.savez(out[name], **{m: rng.normal(size=(4, d)).astype(np.float32)})
    return out


def features(paths, names):
    return {name[:-1] if name == "audio8" else name: np.load(paths[name])["audio" if name == "audio8" else name]
            for name in names}


# ------------------------------------------------------------------------------------------ handlers


def test_answer_and_every_subset_equal_predict(text_audio_ckpt, npz):
    """The page's answer is `predict`'s, and each bar of the subset chart is `predict` on that subset alone."""
    session = DemoSession(load_for_demo(text_audio_ckpt))
    assert session.kinds == {"text": "text", "audio": "features"}
    text = "it was really good"
    out = session.run({"text": text, "audio": str(npz["audio8"])}, ["text", "audio"])
    expected = predict(text_audio_ckpt, text=text, features=features(npz, ["audio8"]))
    assert out["student"] == expected and out["teacher"] is None
    bars = {r["modalities"]: r["score"] for r in out["subsets"]}
    assert bars == {
        "T": predict(text_audio_ckpt, text=text)["score"],
        "A": predict(text_audio_ckpt, features=features(npz, ["audio8"]))["score"],
        "T+A": expected["score"],
    }
    assert len(set(bars.values())) == 3  # the chart shows a difference
    # switching audio off is predicting without it
    off = session.run({"text": text, "audio": str(npz["audio8"])}, ["text"])
    assert off["student"] == predict(text_audio_ckpt, text=text)
    assert [r["modalities"] for r in off["subsets"]] == ["T"]


def test_missing_rate_is_p2_seeded(text_audio_ckpt, npz):
    session = DemoSession(load_for_demo(text_audio_ckpt))
    inputs = {"text": "the plot was dull and far too long", "audio": str(npz["audio8"])}
    full = session.run(inputs, ["text", "audio"], rate=0.0)["student"]["score"]
    half = [session.run(inputs, ["text", "audio"], rate=0.5, seed=s)["student"]["score"] for s in (1111, 1111, 7)]
    assert half[0] == half[1]  # same setting, same answer
    assert half[0] != full and half[2] != half[0]  # the slider and the seed move the answer
    # at rate 1 every audio step and every token but [CLS]/[SEP] is dropped: as P2 says, not as "missing"
    assert session.run(inputs, ["text", "audio"], rate=1.0)["student"]["modalities_used"] == ["text", "audio"]


def test_class_checkpoint_three_feature_modalities_and_teacher(tmp_path, npz):
    """Classes (probabilities per class), three modalities, and a two-modality teacher side by side."""
    names = ["negative", "neutral", "positive"]
    student = save(tmp_path / "cls", **feature_config_kwargs(), task="classification", num_labels=3,
                   id2label=dict(enumerate(names)), feature_standardization=stats({"text": 7, "audio": 5, "vision": 6}))
    kwargs = {**feature_config_kwargs(), "vision_feature_dim": None}
    teacher = save(tmp_path / "teacher", **kwargs, task="classification", num_labels=3, id2label=dict(enumerate(names)))
    app = build_app(student, teacher=teacher)
    session = app.session
    assert session.kinds == {"text": "features", "audio": "features", "vision": "features"}
    out = session.run({m: str(p) for m, p in npz.items()}, ["text", "audio", "vision"])
    result = out["student"]
    assert set(result["probabilities"]) == set(names)
    assert result == predict(student, features=features(npz, ["text", "audio", "vision"]))
    assert out["teacher"] == predict(teacher, features=features(npz, ["text", "audio"]))  # it has no vision
    assert len([r for r in out["subsets"] if r["model"] == "student"]) == 7
    assert {r["modalities"] for r in out["subsets"] if r["model"] == "teacher"} == {"T", "A", "T+A"}


def test_examples_from_a_prepared_split(text_audio_ckpt):
    """`--dataset demo`: the picker lists real rows (id, true label, transcript-less demo rows) and fills the
    inputs with the row's own features; the answer is `predict` on them."""
    app = build_app(text_audio_ckpt, dataset="demo", split="test")
    session = app.session
    choices = session.example_choices()
    rows = make_demo_dataset(seed=0)["test"]
    assert len(choices) == len(rows) and choices[0].startswith(f"{rows[0]['id']} | true score {rows[0]['label']:+.2f}")
    inputs, row_id, truth = session.example(choices[0])
    assert row_id == rows[0]["id"] and truth == f"true score {rows[0]['label']:+.2f}"
    assert set(inputs) == {"audio"}  # the demo rows have no transcript
    audio = np.asarray(rows[0]["audio_features"], dtype=np.float32)
    np.testing.assert_array_equal(np.load(inputs["audio"])["audio"], audio)
    assert session.run(inputs, ["text", "audio"])["student"] == predict(text_audio_ckpt, features={"audio": audio})


def test_errors_are_one_line(text_audio_ckpt, npz, tmp_path):
    session = DemoSession(load_for_demo(text_audio_ckpt))
    wide = tmp_path / "wide.npz"
    np.savez(wide, audio=np.ones((3, 9), dtype=np.float32))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    fake = tmp_path / "fake.npz"
    fake.write_text("not a zip archive")
    cases = [
        ({"text": "good", "audio": str(npz["audio8"])}, [], "every modality is switched off"),
        ({"text": "good", "audio": str(wide)}, ["text", "audio"], "audio_features has shape \\(3, 9\\), but the model expects \\(steps, 8\\)"),
        ({"audio": str(text_file)}, ["audio"], "audio features file notes.txt is not an .npz file"),
        ({"audio": str(fake)}, ["audio"], "cannot read features file"),
        ({"audio": str(npz["text"])}, ["audio"], "audio features file text.npz has no 'audio' array"),
        ({"text": "   "}, ["text"], "no input given for a switched-on modality"),
    ]
    for inputs, enabled, message in cases:
        with pytest.raises((ValueError, OSError), match=message):
            session.run(inputs, enabled)
    # the page's handler turns them into one line and keeps serving
    app = build_app(text_audio_ckpt)
    handler = app.fns[0].fn
    error, answer, *_ = handler("good", str(fake), True, True, 0.0, 1111, None)
    assert error.startswith("error: cannot read features file") and "\n" not in error and answer == ""
    error, answer, *_ = handler("good", str(npz["audio8"]), True, True, 0.0, 1111, None)
    assert error == "" and page.SCORE.fullmatch(answer)


# ------------------------------------------------------------------------------------------ the Space


def test_publish_space_runs_the_same_app_with_remote_code(text_audio_ckpt, tmp_path, npz, capsys):
    """`hf-mmkd publish --space --dry-run --out DIR`: DIR/space is a Gradio Space whose app.py builds this module's
    app from the Hub id with remote code; its hf_mmkd copy imports on its own; the model upload leaves it out."""
    out = tmp_path / "release"
    argv = ["publish", str(text_audio_ckpt), "--repo-id", "me/mosi-student", "--space", "--dry-run", "--out", str(out)]
    assert cli_main(argv) == 0
    assert "space/app.py" in capsys.readouterr().out
    space = out / "space"
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:  # the upload: the model without space/, then the Space
        upload(out, "me/mosi-student", space=True)
    api = api_cls.return_value
    assert api.upload_folder.call_args_list == [
        mock.call(repo_id="me/mosi-student", folder_path=str(out), repo_type="model",
                  commit_message="Upload hf_mmkd model", ignore_patterns=[".hf_mmkd_outputs.json", "space/*"]),
        mock.call(repo_id="me/mosi-student-demo", folder_path=str(space), repo_type="space",
                  commit_message="Upload hf_mmkd model", ignore_patterns=[".hf_mmkd_outputs.json"])]
    assert api.create_repo.call_args_list[1] == mock.call(repo_id="me/mosi-student-demo", repo_type="space",
                                                          space_sdk="gradio", private=False, exist_ok=True)
    front = (space / "README.md").read_text()
    assert front.startswith("---\ntitle: mosi-student\nsdk: gradio\nsdk_version: " + gr.__version__)
    assert "gradio>=" in (space / "requirements.txt").read_text()
    app_py = (space / "app.py").read_text()
    assert "from hf_mmkd.demo_app import build_app" in app_py
    assert "build_app('me/mosi-student', trust_remote_code=True)" in app_py
    assert (space / "hf_mmkd" / "demo_app.py").read_text() == Path(sys.modules["hf_mmkd.demo_app"].__file__).read_text()
    probe = subprocess.run([sys.executable, "-c", "import hf_mmkd.demo_app, hf_mmkd.inference, hf_mmkd; "
                            "print(hf_mmkd.__file__)"], cwd=space, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert Path(probe.stdout.strip()).resolve() == (space / "hf_mmkd" / "__init__.py").resolve()
    # app.py's call with the release folder standing in for the Hub id: the shipped code, same answers
    app = build_app(out, trust_remote_code=True)
    model = app.session.student.model
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = {"text": "it was good", "audio": str(npz["audio8"])}
    assert app.session.run(inputs, ["text", "audio"])["student"]["score"] == pytest.approx(
        predict(text_audio_ckpt, text="it was good", features=features(npz, ["audio8"]))["score"], abs=1e-6)


# ------------------------------------------------------------------------------------------ the browser


def _demo_page():
    """benchmarks/demo_page.py: the browser helpers shared with the timing script."""
    spec = importlib.util.spec_from_file_location("demo_page", REPO_ROOT / "benchmarks" / "demo_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


page = _demo_page()


@pytest.fixture
def demo_server(text_audio_ckpt):
    """`hf-mmkd demo CKPT --port <free loopback port>` in a subprocess: its URL, stopped after the test."""
    proc, url, _ = page.start_demo([text_audio_ckpt], timeout=120)
    try:
        yield url
    finally:
        page.stop_demo(proc)


def test_real_browser(demo_server, text_audio_ckpt, npz, tmp_path):
    """Type a transcript, upload audio features then switch audio off, submit; the score on the page is
    `hf-mmkd predict --text` on the same transcript. Then a bad file: one line in the page, and it keeps serving."""
    binaries = page.browser_binaries()
    if binaries is None:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.common.by import By

    wait_value = page.wait_value
    text = "anyhow it was really good"
    browser = page.start_browser(*binaries)
    try:
        browser.get(demo_server)
        wait_value(browser, "#error", pattern=r"^$")  # the page is rendered
        browser.find_element(By.CSS_SELECTOR, "#input-text textarea").send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "#input-audio input[type=file]").send_keys(str(npz["audio8"]))
        time.sleep(1.0)  # the upload lands
        browser.find_element(By.CSS_SELECTOR, "#use-audio input[type=checkbox]").click()
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        answer = wait_value(browser, "#answer", pattern=page.SCORE.pattern)
        browser.save_screenshot(str(tmp_path / "demo.png"))
        expected = json.loads(subprocess.run([str(HF_MMKD), "predict", str(text_audio_ckpt), "--text", text],
                                             capture_output=True, text=True, check=True, timeout=120).stdout)
        score, label, used = page.SCORE.search(answer).groups()
        assert float(score) == pytest.approx(expected["score"], abs=5e-5) and label == expected["label"]
        assert used == "text" and expected["modalities_used"] == ["text"]

        # a bad file where the audio features go: one readable line, then a good submit still answers
        bad = tmp_path / "clip.npz"
        bad.write_bytes(b"this is not an npz archive")
        browser.find_element(By.CSS_SELECTOR, "#use-audio input[type=checkbox]").click()
        browser.find_element(By.CSS_SELECTOR, "#input-audio button[aria-label='Clear']").click()
        browser.find_element(By.CSS_SELECTOR, "#input-audio input[type=file]").send_keys(str(bad))
        time.sleep(1.0)
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        message = wait_value(browser, "#error", pattern=r"^error: ")
        assert message.startswith("error: cannot read features file clip.npz (expected an .npz")
        assert "\n" not in message and "Traceback" not in browser.page_source
        browser.save_screenshot(str(tmp_path / "demo_error.png"))
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        browser.find_element(By.CSS_SELECTOR, "#use-audio input[type=checkbox]").click()  # audio off: serves again
        browser.find_element(By.CSS_SELECTOR, "#submit").click()
        assert wait_value(browser, "#error", pattern=r"^$") == ""
        assert page.SCORE.search(wait_value(browser, "#answer", pattern=page.SCORE.pattern)).group(1) == score
    finally:
        browser.quit()


def test_cli_does_not_import_gradio():
    """gradio is imported when the demo is built, not by `hf-mmkd --help` or any other command."""
    code = ("import sys; from hf_mmkd.cli import build_parser; build_parser().format_help(); "
            "import hf_mmkd.demo_app; print('gradio' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False"]
