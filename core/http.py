"""One small blocking HTTP exchange for the studio's clients (ComfyUI, Ollama): any HTTP answer
comes back as (status, body); failing to get one is a `TransportError` whose `why` is short and
safe to show ("connection refused", "no answer within 30 s", …). Proxies from the environment are
never used: these servers are usually on this machine or the local network."""

from __future__ import annotations

import base64
import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from .errors import InvalidInput


class TransportError(Exception):
    def __init__(self, why: str, protocol: bool = False):
        super().__init__(why)
        self.why = why
        self.protocol = protocol  # the server answered, but not in HTTP


def service_url(base_url: str, service: str, example: str,
                headers: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(base URL, headers) for a server's address as a user writes it ("http://user:pw@host:8188/",
    " https://[::1]:11434 "): the scheme must be http(s) and a host named; `user:password@` becomes a
    Basic Authorization header (urllib ignores it; a header given in `headers` wins); the base URL keeps
    scheme, host, port and path without the credentials or a trailing slash. `service` and `example`
    phrase the errors ("The ComfyUI URL ... e.g. http://127.0.0.1:8188")."""
    try:
        parts = urllib.parse.urlsplit((base_url or "").strip())
        port = parts.port  # raises ValueError for a bad port
    except (ValueError, AttributeError) as exc:
        raise InvalidInput(f"The {service} URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"The {service} URL must start with http:// or https:// and name a host, e.g. {example}.")
    out = dict(headers or {})
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        out.setdefault("Authorization", f"Basic {token}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), out


def direct_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def exchange(opener: urllib.request.OpenerDirector, request: urllib.request.Request,
             timeout: float) -> tuple[int, bytes]:
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        try:
            raw = exc.read() or b""
        except (OSError, http.client.HTTPException):
            raw = b""
        finally:
            exc.close()
        return exc.code, raw
    except http.client.HTTPException as exc:
        raise TransportError(type(exc).__name__, protocol=True) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
            raise TransportError(f"no answer within {timeout:g} s") from None
        if isinstance(reason, ConnectionRefusedError):
            raise TransportError("connection refused") from None
        raise TransportError((str(reason) or type(reason).__name__)[:160]) from None
