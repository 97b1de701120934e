"""`python -m lora_studio serve` that cannot start says why in one line on stderr and exits non-zero
(a taken port, an unreachable PostgreSQL — never its password), and says "LoRA Studio on http://…" only
once it listens with the studio built; SIGTERM stops it cleanly. Real subprocesses, as a user runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from support.processes import StudioServer, clean_env, free_port

PASSWORD = "Sup3r-Secret-pw"


def serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_studio", "serve", "--data", str(tmp_path / "data"), *args],
                          capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=60)


def test_a_taken_port_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = serve(tmp_path, "--port", str(port))
    assert run.returncode == 1, run
    assert run.stderr.splitlines() == [f"lora_studio: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "LoRA Studio on" not in run.stdout
    assert not (tmp_path / "data").exists()  # refused before the data folder or database was touched


def test_an_unreachable_database_is_one_line_without_the_password_and_exit_1(tmp_path):
    url = f"postgresql://studio:{PASSWORD}@127.0.0.1:1/x"
    run = serve(tmp_path, "--port", str(free_port()), "--database-url", url)
    assert run.returncode == 1, run
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("lora_studio: the database is not reachable: "), lines
    assert "127.0.0.1" in lines[0] and "port 1" in lines[0]  # the driver's reason names where it tried
    assert PASSWORD not in run.stderr + run.stdout
    assert "LoRA Studio on" not in run.stdout and "Traceback" not in run.stderr


def test_it_says_where_it_runs_only_once_it_answers_and_stops_on_sigterm(tmp_path):
    server = StudioServer(tmp_path, tmp_path / "data")
    server.start()  # waits for the line, then asks /health once: no retry, so it must already answer
    try:
        status, body = server.call("GET", "/projects")
        assert status == 200 and body["items"] == []
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log()


def test_a_database_server_that_never_answers_fails_within_the_connect_timeout(tmp_path):
    """A listener that accepts nothing (like a host whose firewall drops the packets): without a default
    connect timeout the start would wait for the operating system's TCP timeout, minutes."""
    from lora_studio.core.db import CONNECT_TIMEOUT_S

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://studio:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/x"
        started = time.monotonic()
        run = serve(tmp_path, "--port", str(free_port()), "--database-url", url)
        elapsed = time.monotonic() - started
    assert run.returncode == 1, run
    assert run.stderr.splitlines()[0].startswith("lora_studio: the database is not reachable: "), run.stderr
    assert len(run.stderr.splitlines()) == 1 and PASSWORD not in run.stderr
    assert CONNECT_TIMEOUT_S <= elapsed < CONNECT_TIMEOUT_S + 20, elapsed


def test_migrate_against_an_unreachable_database_is_one_line_and_exit_1(tmp_path):
    env = clean_env(LORA_STUDIO_DATABASE_URL=f"postgresql://studio:{PASSWORD}@127.0.0.1:1/x")
    run = subprocess.run([sys.executable, "-m", "lora_studio", "migrate", "--data", str(tmp_path / "data")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 1, run
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("lora_studio: the database is not reachable: ") and PASSWORD not in run.stderr


def test_train_against_an_unreachable_database_is_one_line_and_exit_1(tmp_path):
    run = subprocess.run([sys.executable, "-m", "lora_studio", "train", "--character", "moon/aiko", "--base-model", "x",
                          "--data", str(tmp_path / "data"),
                          "--database-url", f"postgresql://studio:{PASSWORD}@127.0.0.1:1/x"],
                         capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=60)
    assert run.returncode == 1, run
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("lora_studio: the database is not reachable: ") and PASSWORD not in run.stderr
