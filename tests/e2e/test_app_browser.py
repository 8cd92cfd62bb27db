"""The app in a real browser: Debian's Chromium, driven by Playwright, against `medsynth app`.

Starts the server the way a user does (``medsynth app --port P``, 127.0.0.1 only) in its own process
group, clicks Generate, times click -> images on screen (cold: first click after start; warm: a second
click), saves a screenshot and the timings under test-artifacts/, and stops the whole group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import (  # noqa: F401 - fixtures
    MODEL_NAME,
    extractor_dir,
    generator_file,
    install_extractor,
    register_generator,
)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {timeout:.0f}s")


@pytest.fixture
def server(project, generator_file, extractor_dir):  # noqa: F811
    """`medsynth app` on a free port over a project with a registered champion."""
    register_generator(project, generator_file)
    install_extractor(project, extractor_dir)
    port = _free_port()
    env = {**os.environ, "MEDSYNTH_PARAMS": str(REPO / "params.yaml")}
    log = open(project.root / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "medsynth", "app", "--port", str(port)], cwd=project.root,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make system-deps)")
def test_generate_in_chromium(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(server, wait_until="domcontentloaded")
            page.get_by_text("Promotion gate: gate passed").wait_for(timeout=90_000)
            button = page.get_by_role("button", name="Generate")
            button.wait_for(timeout=60_000)
            images = page.locator('[data-testid="stImage"] img')
            for run, seed in (("cold", 0), ("warm", 5)):
                if run == "warm":  # a new seed, so the page really changes
                    box = page.get_by_role("spinbutton", name="Seed (0")
                    box.fill(str(seed))
                    box.press("Enter")
                    page.wait_for_timeout(1000)
                t0 = time.perf_counter()
                button.click()
                page.get_by_text(f"16 SYNTHETIC images from {MODEL_NAME} v1 (seed {seed},").wait_for(timeout=90_000)
                images.nth(15).wait_for(timeout=90_000)
                page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                                       ".slice(0, 16).every(i => i.complete && i.naturalWidth > 0)", timeout=90_000)
                timings[f"{run}_click_to_images_s"] = time.perf_counter() - t0
                # the live evaluation runs after the images are shown; let it finish before the next click
                done = page.get_by_text(re.compile(rf"Computed in .* \(seed {seed}\)"))
                done.wait_for(state="attached", timeout=120_000)
                timings[f"{run}_click_to_live_eval_s"] = time.perf_counter() - t0
            assert "Traceback" not in page.content()
            assert images.count() >= 16
            page.screenshot(path=str(ARTIFACTS / "app_generate.png"), full_page=True)
            page.get_by_role("tab", name="Live evaluation").click()
            page.get_by_text("FID-domain (this batch)").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "app_live_eval.png"), full_page=True)
        finally:
            browser.close()
    (ARTIFACTS / "app_browser_timing.json").write_text(json.dumps(timings, indent=2))
    print(f"click -> 16 images shown: {timings}")
    assert timings["warm_click_to_images_s"] < 30
