"""The perimeter of our routes, checked before any handler runs: which `Host` names are served
(the DNS-rebinding defence), which bodies a state-changing request may carry, and JSON answers for
unknown paths and methods under our prefix.

DNS rebinding: a page on evil.example re-points its own name at 127.0.0.1, so the browser sends
`Host: evil.example` and `Origin: http://evil.example` — the same origin — to this server. Only the
`Host` name gives it away. Always served: `localhost` and `*.localhost` (reserved, browsers resolve
them to loopback themselves), and every IP literal — loopback or not, whatever the bind address:
a rebinding page always sends its DNS name, and a browser connects to the address an IP literal
names, so such a Host cannot carry an attacker's page. Other names only from `allowed_hosts`."""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

SETTING_HINT = "LORA_STUDIO_ALLOWED_HOSTS (allowed_hosts in the settings file)"
JSON = "application/json"
MULTIPART = "multipart/form-data"

_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PORT = re.compile(r":\d*")


def _ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(value: str) -> str | None:
    """The name or address of a Host header (or an allowed_hosts entry): lowercased, without the
    port, IPv6 brackets or a trailing dot. None when it is not a plain host[:port]."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not _PORT.fullmatch(value[end + 1:] or ":"):
            return None
        name = value[1:end]
        return name if ":" in name and _ip(name) else None
    name, colon, port = value.partition(":")
    if colon and not _PORT.fullmatch(colon + port):
        return None
    if name.endswith("."):
        name = name[:-1]
    return name if _NAME.fullmatch(name) else None


def builtin_host(name: str) -> bool:
    """Served whatever the settings say: localhost, *.localhost and IP literals."""
    return name == "localhost" or name.endswith(".localhost") or _ip(name)


def configured_host(name: str, allowed: tuple[str, ...]) -> bool:
    """`name` is one of the allowed_hosts entries; `*.example.lan` matches any subdomain of example.lan."""
    for entry in allowed:
        entry = entry.strip().lower()
        wildcard = entry.startswith("*.")
        pattern = host_name(entry[2:] if wildcard else entry)
        if pattern is not None and (name.endswith("." + pattern) if wildcard else name == pattern):
            return True
    return False


def host_refusal(host: str | None, allowed: tuple[str, ...]) -> web.Response | None:
    """The 403 answer for a request whose Host is not served, else None. No Host header at all
    (HTTP/1.0 scripts) passes: every browser sends one."""
    if host is None:
        return None
    name = host_name(host)
    if name is not None and (builtin_host(name) or configured_host(name, allowed)):
        return None
    from .api import error_response

    shown = (name or host)[:100]
    return error_response(403, "forbidden_host",
                          f"this server does not answer to the host name '{shown}' (a defence against DNS "
                          f"rebinding); if that is the name you reach it by, add it to {SETTING_HINT}")


def needs_settings(host: str | None) -> bool:
    """Whether the Host can only pass through allowed_hosts (so the settings must be known)."""
    if host is None:
        return False
    name = host_name(host)
    return name is not None and not builtin_host(name)


def body_refusal(request: web.Request, upload: bool) -> web.Response | None:
    """The 415 answer for a state-changing request whose body is neither JSON (JSON routes) nor
    multipart/form-data (upload routes), else None. text/plain and form-urlencoded bodies are what
    an HTML form or a no-cors fetch from another site can send, so they never reach a handler. A
    request without a body (`curl -X POST …/approve`) passes."""
    if not request.body_exists:
        return None
    expected = MULTIPART if upload else JSON
    if request.content_type == expected:
        return None
    from .api import error_response

    got = request.headers.get("Content-Type")
    return error_response(415, "unsupported_media_type",
                          f"send the body as {expected}" + (f", not {got[:100]}" if got else " (no Content-Type was sent)")
                          + (" (with curl: -H 'Content-Type: application/json' or --json)" if not upload else ""))


async def allowed_methods(request: web.Request, prefix: str) -> set[str]:
    """The methods the app's routes under `prefix` accept for this request's path (empty: no such path)."""
    methods: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is own or not resource.canonical.startswith(prefix):
            continue
        match, allowed = await resource.resolve(request)
        if match is None:
            methods |= allowed
    return methods
