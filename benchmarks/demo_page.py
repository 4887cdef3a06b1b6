"""`hf-mmkd demo` in a real browser: time to a served page, submit-to-answer times, and the README's screenshot.

    python benchmarks/demo_page.py STUDENT --dataset PREPARED --example ROW_ID [--teacher TEACHER] [--runs 2] \
        [--screenshot docs/demo.png] [--out benchmarks/results/demo_page.json]

Each run starts `hf-mmkd demo STUDENT --dataset PREPARED --port <free port>` in a subprocess and times it until the
page answers HTTP 200; then headless Chromium (Debian's `chromium` + `chromium-driver`, through Selenium) picks the
example row, and submits it alternately with every modality on (text + audio for CMU-MOSI) and with text only
(the other switches off), timing each from the click to the new answer in the page. With `--screenshot`, a last
server with `--teacher` answers the example side by side and the page is saved as a PNG. Times depend on the
machine and its load; the JSON records the machine (cores, load average) and the command.

The browser helpers (`free_port`, `start_demo`, `start_browser`, `wait_value`) are shared with
tests/test_demo_app.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HF_MMKD = Path(sys.executable).with_name("hf-mmkd")
SCORE = re.compile(r"score ([+-]\d+\.\d{4}) \((\w+)\) from ([\w+]+)")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(args: list[str], timeout: float = 120) -> tuple[subprocess.Popen, str, float]:
    """(process, url, seconds to a served page) of `hf-mmkd demo ARGS --port <free port>`; fails if the server
    exits or no page is served within `timeout` seconds. Stop it with `stop_demo`."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.monotonic()
    proc = subprocess.Popen([str(HF_MMKD), "demo", *map(str, args), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"hf-mmkd demo exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url, time.monotonic() - start
        except OSError:
            time.sleep(0.05)
    stop_demo(proc)
    raise RuntimeError(f"no page at {url} after {timeout} s")


def stop_demo(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when they are not installed."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


def start_browser(chrome: str, driver: str, size: str = "1400,1500"):
    """Headless Chromium through Selenium's Chrome driver (no browser download: the system's binaries)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={size}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    browser.implicitly_wait(30)  # the page renders after it is served: element look-ups wait for it
    return browser


def wait_value(browser, css: str, timeout: float = 60, pattern: str = r".+", other_than: str | None = None) -> str:
    """The value of the textbox `css` (a gradio Textbox's elem_id) once it matches `pattern` (and differs from
    `other_than`), polled every 20 ms."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def value(_):
        text = browser.find_element(By.CSS_SELECTOR, f"{css} textarea, {css} input").get_attribute("value") or ""
        return [text] if re.search(pattern, text) and text != other_than else False  # "" is a value too

    return WebDriverWait(browser, timeout, poll_frequency=0.02).until(value)[0]


def click(browser, css: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, css).click()


def pick_example(browser, row_id: str) -> None:
    """Choose the example whose id is `row_id` in the page's picker; wait until its transcript is filled in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.CSS_SELECTOR, "#example input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(f"{row_id} |")  # the picker filters its choices as one types
    browser.find_element(By.CSS_SELECTOR, "#example ul[role=listbox] li").click()
    wait_value(browser, "#truth", pattern=r"^true ")


def switch(browser, modality: str, on: bool) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.CSS_SELECTOR, f"#use-{modality} input[type=checkbox]")
    if box.is_selected() != on:
        box.click()


def timed_submit(browser, previous: str) -> tuple[str, float]:
    """(answer, seconds from the click on Predict to a new answer in the page)."""
    start = time.monotonic()
    click(browser, "#submit")
    answer = wait_value(browser, "#answer", pattern=SCORE.pattern, other_than=previous)
    return answer, time.monotonic() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--example", required=True, help="row id of the example to submit")
    parser.add_argument("--teacher", default=None, help="for the screenshot: shown side by side")
    parser.add_argument("--split", default="test")
    parser.add_argument("--runs", type=int, default=2, help="servers started (each: 2 text+audio, 2 text-only submits)")
    parser.add_argument("--screenshot", default=None, help="PNG of the page with --teacher (e.g. docs/demo.png)")
    parser.add_argument("--rate", type=float, default=0.0, help="missing rate set for the screenshot")
    parser.add_argument("--out", default=None, help="JSON of the measurements")
    args = parser.parse_args(argv)
    binaries = browser_binaries()
    if binaries is None:
        sys.exit("demo_page.py: chromium / chromedriver not found (apt-get install chromium chromium-driver)")
    common = ["--dataset", args.dataset, "--split", args.split]
    page, both, text_only = [], [], []
    for run in range(args.runs):
        proc, url, seconds = start_demo([args.student, *common])
        page.append(seconds)
        browser = start_browser(*binaries)
        try:
            browser.get(url)
            pick_example(browser, args.example)
            answer = ""
            for _ in range(2):
                switch(browser, "audio", True)
                answer, t = timed_submit(browser, answer)
                both.append(t)
                switch(browser, "audio", False)
                answer, t = timed_submit(browser, answer)
                text_only.append(t)
            print(f"run {run + 1}: page {seconds:.2f} s; text+audio {both[-2:]}, text only {text_only[-2:]}; "
                  f"last answer {answer!r}", flush=True)
        finally:
            browser.quit()
            stop_demo(proc)
    if args.screenshot:
        proc, url, _ = start_demo([args.student, *(["--teacher", args.teacher] if args.teacher else []), *common])
        browser = start_browser(*binaries, size="1400,2000")
        try:
            browser.get(url)
            pick_example(browser, args.example)
            if args.rate:
                from selenium.webdriver.common.by import By

                rate = browser.find_element(By.CSS_SELECTOR, "#rate input[type=number]")
                rate.clear()
                rate.send_keys(str(args.rate))
            timed_submit(browser, "")
            if args.teacher:
                wait_value(browser, "#teacher-answer", pattern=SCORE.pattern)
            time.sleep(1.5)  # the chart draws
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(args.screenshot)
            print(f"wrote {args.screenshot}")
        finally:
            browser.quit()
            stop_demo(proc)
    summary = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1")},
        "page_seconds": page, "answer_seconds_text_audio": both, "answer_seconds_text_only": text_only,
        "median": {"page": statistics.median(page), "text_audio": statistics.median(both),
                   "text_only": statistics.median(text_only)},
    }
    print(json.dumps(summary["median"]))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
