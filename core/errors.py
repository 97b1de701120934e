"""Errors a service raises for a caller to show: each carries an HTTP status and a stable code."""

from __future__ import annotations


class StudioError(Exception):
    """An error whose message is safe to show to the user (no secrets, no tracebacks)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(StudioError):
    status = 400
    code = "invalid_input"


class NotFound(StudioError):
    status = 404
    code = "not_found"


class Conflict(StudioError):
    status = 409
    code = "conflict"


class PayloadTooLarge(StudioError):
    status = 413
    code = "payload_too_large"


class Unavailable(StudioError):
    """A component the request needs is missing or unreachable (ComfyUI down, torch not installed)."""

    status = 503
    code = "unavailable"


class UpstreamError(StudioError):
    """ComfyUI (or another upstream) answered with an error."""

    status = 502
    code = "upstream_error"
