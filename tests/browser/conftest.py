"""Fixtures for the browser tests: the standalone server in a subprocess and Debian's chromium
driven by Playwright (the test is skipped when either is missing)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.processes import app_in_thread, studio_process
from support.studio_http import RunningStudio

CHROMIUM = Path("/usr/bin/chromium")
OBJECT_INFO = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui" / "object_info.json"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class StudioServer(RunningStudio):
    output_dir: Path  # the --comfyui-output folder (gallery)
    comfyui_url: str  # the stand-in ComfyUI generations go to


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory) -> StudioServer:
    """The standalone studio (a subprocess) whose generations go to the stand-in ComfyUI, which
    writes its images into the gallery folder as ComfyUI does."""
    from support.fake_comfyui import create_fake_comfyui

    root = tmp_path_factory.mktemp("studio")
    data, out = root / "data", root / "comfyui-output"
    out.mkdir()
    fake = create_fake_comfyui(json.loads(OBJECT_INFO.read_text()), out)
    with app_in_thread(fake, "fake-comfyui") as comfyui_url, \
            studio_process(root, data, "--comfyui-output", str(out), "--comfyui-url", comfyui_url) as base:
        yield StudioServer(base, data, out, comfyui_url)


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop running in this thread while it is open, which
    # breaks asyncio tests; module scope closes it after the browser tests (which run last).
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package 'playwright' is not installed (pip install -e '.[test]')")
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is not executable")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh context (no localStorage from another test); page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
