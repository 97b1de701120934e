"""A lazily built, shared Studio: start-up (database, migrations, job runner) can run in the
background, every user waits for it, and a start-up failure reaches each caller as a 503."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import Unavailable

log = logging.getLogger("lora_studio.studio")


class StudioRef:
    """Holds the one Studio; `build` makes it (once), `get` waits for it."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._studio: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def build(self) -> None:
        with self._lock:
            if self._ready.is_set():
                return
            try:
                studio = self._factory()
                studio.start()
                self._studio = studio
            except Exception as e:  # reported to every caller; never crash the host
                log.exception("LoRA Studio failed to start")
                self._error = str(e) or type(e).__name__
            finally:
                self._ready.set()

    def build_in_background(self) -> None:
        threading.Thread(target=self.build, name="lora-studio-start", daemon=True).start()

    def ready(self) -> bool:
        return self._studio is not None

    def get(self) -> Any:
        if not self._ready.is_set():
            self.build()
        if self._studio is None:
            raise Unavailable(f"LoRA Studio could not start: {self._error}")
        return self._studio

    def close(self) -> None:
        if self._studio is not None:
            self._studio.close()

