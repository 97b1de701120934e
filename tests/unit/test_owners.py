"""Whether the process that made something is gone: asked without ever signalling it."""

from __future__ import annotations

import os
import subprocess
import sys

from lora_studio.core import owners


def test_a_finished_process_is_gone_and_a_running_one_is_not():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert owners.process_gone(finished.pid)
        assert not owners.process_gone(running.pid)
        assert not owners.tag_gone(owners.owner_tag(running.pid), 0.0)
        assert owners.tag_gone(owners.owner_tag(finished.pid), 0.0)
        assert not owners.tag_gone(f"00000000-{finished.pid}", 0.0)  # another host's process: never known gone
    finally:
        running.kill()
        running.wait()


def test_on_windows_the_check_never_sends_a_signal(monkeypatch):
    """os.kill(pid, 0) on Windows terminates the process: the check must ask the OS instead."""
    asked: list[int] = []
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(owners, "_windows_pid_alive", lambda pid: asked.append(pid) or False)
    monkeypatch.setattr(os, "kill", lambda *a: (_ for _ in ()).throw(AssertionError(f"os.kill{a} on Windows")))
    assert owners.process_gone(os.getpid() + 100000)
    assert asked == [os.getpid() + 100000]
