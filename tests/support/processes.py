"""Servers for tests that talk to them from outside the test's event loop: an aiohttp app on its
own loop in a thread (stand-ins for ComfyUI, Ollama…), and the standalone studio as a subprocess
started the way a user starts it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_in_thread(app, name: str = "stand-in") -> Iterator[str]:
    """Serve an aiohttp app on 127.0.0.1 from a thread with its own event loop; yields its URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()

    async def up() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    try:
        asyncio.run_coroutine_threadsafe(up(), loop).result(10)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any studio setting of the developer's shell (a PostgreSQL URL, a
    settings file, a real ComfyUI, a Vault…), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LORA_STUDIO_", "VAULT_")) and k != "COMFYUI_URL"}
    env.update(extra)
    return env


@contextlib.contextmanager
def studio_process(root: Path, data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`python -m lora_studio serve` on a free port until the block ends; yields its base URL.
    Fails (pytest.fail) with the server's log when it exits or does not answer."""
    import pytest

    port = free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "lora_studio", "serve", "--data", str(data), "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the studio server exited with {proc.returncode}:\n"
                                f"{log_path.read_text(errors='replace')}")
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
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def request_json(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    """(status, JSON body) of one request; 4xx/5xx answers are returned, not raised."""
    import json

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"raw": text.decode(errors="replace")}


class StudioServer:
    """`python -m lora_studio serve` as a subprocess on a fixed port that a test can kill -9 and start
    again on the same data folder and database. `start()` returns once the server printed its
    "LoRA Studio on http://…" line, and checks that it answers at that very moment (the line means it
    listens and the studio is built). Each start logs to `<root>/server-<n>.log`."""

    def __init__(self, root: Path, data: Path, *args: str, env: dict[str, str] | None = None):
        self.root, self.data, self.args = root, data, args
        self.env = env or clean_env()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return self.base_url + "/lora-studio/v1"

    @property
    def log_path(self) -> Path:
        return self.root / f"server-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        return request_json(method, self.api + path, body, timeout)

    def start(self, timeout: float = STARTUP_SECONDS) -> None:
        import pytest

        assert self.proc is None, "already running"
        self.starts += 1
        cmd = [sys.executable, "-m", "lora_studio", "serve", "--data", str(self.data), "--port", str(self.port),
               *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        line = f"LoRA Studio on http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + timeout
        while line not in self.log():
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                pytest.fail(f"the studio server exited with code {code}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the studio server did not say it listens within {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        status, body = self.call("GET", "/health", timeout=5)
        assert status == 200 and body["status"] == "ok", (status, body, self.log())

    def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop); its exit code."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.proc = None
        return code
