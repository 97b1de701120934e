"""A lazily built, shared Studio: start-up (database, migrations, job runner) can run in the
background, every user waits for it, and a start-up failure reaches each caller as a 503 (inside
ComfyUI nothing may crash the host). The standalone server reads `error` after building and exits
with it instead (see __main__.py)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .errors import Unavailable
from .redact import scrub

log = logging.getLogger("lora_studio.studio")


class Startable(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Startable)  # what the ref holds: the Studio (core names no entry: StudioRef[Studio])


def database_failure(error: BaseException, *, brief: bool = False) -> str | None:
    """The driver's reason (one line, secrets scrubbed; the DSN is never part of it) when `error` says the
    database could not be reached or dropped the connection (SQLAlchemy's OperationalError or
    InterfaceError); None for anything else. `brief`: only the driver's first line, for answers to
    users: PostgreSQL's DETAIL/HINT/CONTEXT lines that follow can name other sessions, tables and SQL."""
    exc = sys.modules.get("sqlalchemy.exc")  # loaded whenever a database was touched; never imported here
    if exc is None or not isinstance(error, exc.OperationalError | exc.InterfaceError):
        return None
    text = str(getattr(error, "orig", None) or error).strip()
    if brief:
        text = text.splitlines()[0] if text else ""
    return scrub(" ".join(text.split()) or type(error).__name__)


def database_unreachable(error: BaseException) -> str | None:
    """'the database is not reachable: <driver's reason>', or None (see `database_failure`)."""
    reason = database_failure(error)
    return None if reason is None else f"the database is not reachable: {reason}"


def describe_failure(error: BaseException) -> tuple[str, bool]:
    """(one-line reason, expected): expected failures (the database is down) need no traceback."""
    known = database_unreachable(error)
    if known is not None:
        return known, True
    return scrub(" ".join(str(error).split()) or type(error).__name__), False


class StudioRef(Generic[S]):
    """Holds the one Studio; `build` makes it (once), `get` waits for it."""

    def __init__(self, factory: Callable[[], S]):
        self._factory = factory
        self._studio: S | None = None
        self._error: str | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        # False where the caller reports a failed start itself (the standalone command line: one line, exit 1)
        self.log_failures = True

    def build(self) -> None:
        with self._lock:
            if self._ready.is_set():
                return
            studio = None
            try:
                studio = self._factory()
                studio.start()
                self._studio = studio
            except Exception as e:  # reported to every caller; never crash the host
                self._error, expected = describe_failure(e)
                self._failure = e
                if self.log_failures:
                    if expected:
                        log.error("LoRA Studio could not start: %s", self._error)
                    else:
                        log.exception("LoRA Studio failed to start")
                if studio is not None:  # built but not started: stop what it opened (job threads, pool)
                    try:
                        studio.close()
                    except Exception:
                        log.debug("closing a studio that failed to start", exc_info=True)
            finally:
                self._ready.set()

    def build_in_background(self) -> None:
        threading.Thread(target=self.build, name="lora-studio-start", daemon=True).start()

    def ready(self) -> bool:
        return self._studio is not None

    @property
    def error(self) -> str | None:
        """Why the studio could not start (one line, no secrets), once `build` has run and failed."""
        return self._error

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def get(self) -> S:
        if not self._ready.is_set():
            self.build()
        if self._studio is None:
            raise Unavailable(f"LoRA Studio could not start: {self._error}")
        return self._studio

    def close(self) -> None:
        if self._studio is not None:
            self._studio.close()
