"""One small blocking HTTP exchange for the studio's clients (ComfyUI, Ollama): any HTTP answer
comes back as (status, body); failing to get one is a `TransportError` whose `why` is short and
safe to show ("connection refused", "no answer within 30 s", …). Proxies from the environment are
never used: these servers are usually on this machine or the local network."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request


class TransportError(Exception):
    def __init__(self, why: str, protocol: bool = False):
        super().__init__(why)
        self.why = why
        self.protocol = protocol  # the server answered, but not in HTTP


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
