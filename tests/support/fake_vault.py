"""A small local server speaking HashiCorp Vault's KV v2 read API (no Vault binary can be
installed here): GET /v1/<mount>/data/<path> with the X-Vault-Token header."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

from aiohttp import web


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
    """Serve on a free port in a thread of its own (with its own event loop, so it also works
    inside async tests and for hvac's blocking calls); yields (address, list of request headers)."""
    seen: list = []
    started = threading.Event()
    box: dict = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(_app(secrets, token, seen))
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["loop"], box["port"] = loop, site._server.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}", seen
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(5)
