"""Which process made something (a job row's worker, an upload's staging folder, a temporary file)
and whether that process is gone: what a restarted studio may clean up at once after a crash,
instead of waiting for leftovers to grow old."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
from datetime import datetime, timezone

# this host, short and safe in a file name (host names may hold any character)
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TAG = re.compile(r"([0-9a-f]{8})-(\d+)")
_PROCESS_STARTED = datetime.now(timezone.utc)  # before anything this process makes


def owner_tag(pid: int | None = None) -> str:
    """`<host>-<pid>`: put in a name, it says which process made the thing."""
    return f"{HOST_TAG}-{os.getpid() if pid is None else pid}"


def tag_gone(tag: str, changed: float) -> bool:
    """Whether the process an `owner_tag` names is gone; `changed`: the thing's last change (a
    timestamp). A process of another host is never known to be gone."""
    m = _TAG.fullmatch(tag)
    if m is None or m.group(1) != HOST_TAG:
        return False
    return process_gone(int(m.group(2)), datetime.fromtimestamp(changed, timezone.utc))


def process_gone(pid: int, since: datetime | None = None) -> bool:
    """Whether process `pid` of this host, which made something at `since`, is gone: its pid does
    not run, or it is this process's pid but the thing is older than this process (a container
    restarted with the same pid)."""
    if pid == os.getpid():
        if since is None:
            return False
        if since.tzinfo is None:  # SQLite hands back naive UTC
            since = since.replace(tzinfo=timezone.utc)
        return since < _PROCESS_STARTED
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # there os.kill(pid, 0) is TerminateProcess: it would kill whatever has that pid
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _windows_pid_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess (STILL_ACTIVE): looks, never signals."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists, as another user's
    try:
        code = wintypes.DWORD()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
