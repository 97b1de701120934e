"""Keep secrets out of logs and answers: every secret value the studio holds is registered here
and replaced by *** in log records and in error messages shown to users."""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secrets(values: list[str]) -> None:
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                text = scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info, record.exc_text = None, text
        return True


def install_log_filter() -> None:
    """Attach the filter to every `lora_studio.*` logger (a logger's filters do not apply to its
    children's records, so each needs its own) and to the root handlers (standalone logging)."""
    flt = RedactingFilter()
    targets = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "lora_studio" or name.startswith("lora_studio.")]
    for target in [*targets, *logging.getLogger().handlers]:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(flt)
