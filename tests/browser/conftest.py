"""Fixtures for the browser tests: the standalone server in a subprocess and Debian's chromium
driven by Playwright (the test is skipped when either is missing)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
OBJECT_INFO = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui" / "object_info.json"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STARTUP_SECONDS = 30


@dataclass
class StudioServer:
    base_url: str  # http://127.0.0.1:<port>
    data_dir: Path
    output_dir: Path  # the --comfyui-output folder (gallery)
    comfyui_url: str | None  # the stand-in ComfyUI generations go to (None when it is unavailable)

    @property
    def api(self) -> str:
        return self.base_url + "/lora-studio/v1"

    @property
    def database(self) -> Path:
        return self.data_dir / "lora_studio.sqlite3"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env() -> dict[str, str]:
    # No setting of the developer's shell (a PostgreSQL URL, a lower minimum of approved images,
    # a settings file, a real ComfyUI, a Vault…) may leak into the server under test.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LORA_STUDIO_", "VAULT_")) and k != "COMFYUI_URL"}


class FakeComfyUIThread:
    """tests/support's stand-in ComfyUI on its own event loop in a thread; it writes the images of
    the graphs it runs into the output folder, as ComfyUI does."""

    def __init__(self, output_dir: Path):
        from aiohttp import web
        from support.fake_comfyui import create_fake_comfyui

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(create_fake_comfyui(json.loads(OBJECT_INFO.read_text()), output_dir))
        self.port = _free_port()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-comfyui", daemon=True)

    def start(self) -> str:
        from aiohttp import web

        self.thread.start()

        async def up() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory) -> StudioServer:
    root = tmp_path_factory.mktemp("studio")
    data, out = root / "data", root / "comfyui-output"
    out.mkdir()
    fake = None
    comfyui_url = None
    try:
        fake = FakeComfyUIThread(out)
        comfyui_url = fake.start()
    except OSError:  # no free port for the stand-in: the generation test is skipped
        fake = None
    port = _free_port()
    log_path = root / "server.log"
    log = open(log_path, "wb")
    cmd = [sys.executable, "-m", "lora_studio", "serve", "--data", str(data), "--port", str(port),
           "--comfyui-output", str(out)]
    if comfyui_url:
        cmd += ["--comfyui-url", comfyui_url]
    proc = subprocess.Popen(cmd, cwd=root, env=_server_env(), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the studio server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(base + "/lora-studio/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the studio server did not answer within {STARTUP_SECONDS}s:\n"
                            f"{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield StudioServer(base, data, out, comfyui_url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        if fake is not None:
            fake.stop()


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
