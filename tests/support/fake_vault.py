"""A small local server speaking HashiCorp Vault's KV v2 read API (no Vault binary can be
installed here): GET /v1/<mount>/data/<path> with the X-Vault-Token header."""

from __future__ import annotations

import contextlib
import uuid

from aiohttp import web

from .processes import app_in_thread


def _app(secrets: dict[str, dict], token: str, seen: list) -> web.Application:
    async def read(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("X-Vault-Token") != token:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        key = f"{request.match_info['mount']}/{request.match_info['path']}"
        if key not in secrets:
            return web.json_response({"errors": []}, status=404)
        return web.json_response({
            "request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": {"data": secrets[key], "metadata": {
                "created_time": "2026-11-25T00:00:00Z", "custom_metadata": None, "deletion_time": "",
                "destroyed": False, "version": 3}},
            "wrap_info": None, "warnings": None, "auth": None,
        })

    app = web.Application()
    app.router.add_get("/v1/{mount}/data/{path:.+}", read)
    return app


@contextlib.contextmanager
def fake_vault(secrets: dict[str, dict], token: str):
    """Serve on a free port from a thread with its own event loop (so it also works inside async
    tests and for hvac's blocking calls); yields (address, list of request headers)."""
    seen: list = []
    with app_in_thread(_app(secrets, token, seen), "fake-vault") as url:
        yield url, seen
