"""The app in a real browser: Debian's Chromium, driven by Playwright, against `medsynth app`.

Starts the server the way a user does (``medsynth app --port P``, 127.0.0.1 only) in its own process
group, in a 1400 x 900 window: the plain verdict near the top and the Generate button on the first
screen (no scrolling); clicks Generate and times click -> images on screen (cold: first click after
start; warm: a second click; both within 5 s), turns on "Compare with real", checks that no
traceback is shown, saves screenshots and the timings under test-artifacts/, and stops the group.
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


VIEWPORT = {"width": 1400, "height": 900}
IMAGES_WITHIN_S = 5.0


def _click_and_time(page, button, seed: int, t0: float) -> float:
    """Click Generate; seconds from ``t0`` until the 16 images of ``seed`` are decoded on screen."""
    button.click()
    page.get_by_text(f"16 SYNTHETIC images from {MODEL_NAME} v1 (seed {seed})").wait_for(timeout=90_000)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                           ".filter(i => i.closest('[data-testid=\"stImage\"]').innerText.includes('SYNTHETIC #'))"
                           ".slice(0, 16).filter(i => i.complete && i.naturalWidth > 0).length === 16",
                           timeout=90_000)
    return time.perf_counter() - t0


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make system-deps)")
def test_generate_in_chromium(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(server, wait_until="domcontentloaded")
            # 1. first screen: the verdict near the top, the Generate button visible without scrolling
            verdict = page.get_by_text(re.compile(r"Quality: (near-real|usable for pipeline testing|refused|realistic|needs work|not judged)"))
            verdict.wait_for(timeout=90_000)
            button = page.get_by_role("button", name="Generate", exact=True)
            button.wait_for(timeout=60_000)
            page.wait_for_timeout(500)  # let the layout settle
            vbox, bbox = verdict.bounding_box(), button.bounding_box()
            timings["verdict_top_px"], timings["generate_bottom_px"] = vbox["y"], bbox["y"] + bbox["height"]
            assert vbox["y"] < VIEWPORT["height"] / 2, f"verdict at {vbox['y']:.0f} px: not near the top"
            assert bbox["y"] + bbox["height"] <= VIEWPORT["height"], f"Generate at {bbox['y']:.0f} px: below the fold"
            assert page.evaluate("window.scrollY") == 0
            page.screenshot(path=str(ARTIFACTS / "app_first_screen.png"))
            # 2. click -> images, cold then warm (another seed, so the page really changes)
            seed_box = page.get_by_role("textbox", name="Seed", exact=True)
            for run, seed in (("cold", 0), ("warm", 5)):
                if run == "warm":
                    seed_box.fill(str(seed))
                    seed_box.press("Enter")
                    page.wait_for_timeout(1000)
                t0 = time.perf_counter()
                timings[f"{run}_click_to_images_s"] = _click_and_time(page, button, seed, t0)
                # the live check runs after the images are shown; let it finish before the next click
                page.get_by_text(re.compile(rf"Checked in .* real reference included .*\(seed {seed}\)")).wait_for(
                    state="attached", timeout=120_000)
                timings[f"{run}_click_to_live_check_s"] = time.perf_counter() - t0
            assert "Traceback" not in page.content()
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(ARTIFACTS / "app_after_generate.png"))
            page.screenshot(path=str(ARTIFACTS / "app_generate.png"), full_page=True)
            # 3. compare with real: real images of the same classes, captioned REAL
            page.get_by_text("Compare with real", exact=True).click()
            page.get_by_text("REAL · ", exact=False).first.wait_for(timeout=60_000)
            assert "Traceback" not in page.content()
            page.screenshot(path=str(ARTIFACTS / "app_compare_real.png"), full_page=True)
        finally:
            browser.close()
    (ARTIFACTS / "app_browser_timing.json").write_text(json.dumps(timings, indent=2))
    print(f"first screen and click -> 16 images shown: {timings}")
    assert timings["cold_click_to_images_s"] < IMAGES_WITHIN_S and timings["warm_click_to_images_s"] < IMAGES_WITHIN_S
