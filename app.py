"""The standalone studio: an aiohttp app with the same routes as inside ComfyUI, the panel's page,
and a websocket for events (inside ComfyUI, events go through ComfyUI's own websocket)."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from pathlib import Path

from aiohttp import WSMsgType, web

from .core.host import Host
from .core.redact import install_log_filter, register_secrets
from .core.ref import StudioRef
from .core.settings import Settings
from .server_routes import build_api
from .server_routes.api import PREFIX, error_response, origin_allowed, register_routes
from .server_routes.perimeter import host_refusal
from .studio import Studio

log = logging.getLogger("lora_studio.app")

WEB_ROOT = Path(__file__).resolve().parent / "web"
STUDIO_KEY = web.AppKey("lora_studio", StudioRef)
EVENTS_KEY = web.AppKey("lora_studio_events", "EventHub")


class EventHub:
    """Broadcasts events to the panel's websockets; `emit` may be called from any thread."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.loop: asyncio.AbstractEventLoop | None = None

    def emit(self, event: str, data: dict) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        message = json.dumps({"type": event, "data": data}, default=str)
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._send(message)))

    async def _send(self, message: str) -> None:
        for ws in list(self.sockets):
            if not ws.closed:
                try:
                    await ws.send_str(message)
                except ConnectionError:
                    pass


def standalone_host(settings: Settings, hub: EventHub) -> Host:
    return Host(
        kind="standalone",
        loras_dir=settings.effective_loras_dir,
        output_dir=settings.comfyui_output_dir,
        models_dir=settings.effective_models_dir,
        comfyui_url=lambda: settings.comfyui_url,
        emit=hub.emit,
    )


async def _events(request: web.Request) -> web.StreamResponse:
    hub: EventHub = request.app[EVENTS_KEY]
    ref: StudioRef = request.app[STUDIO_KEY]
    allowed = ref.get().settings.allowed_origins if ref.ready() else ()
    if not origin_allowed(request, allowed):  # no cross-site websocket reads of job events
        return error_response(403, "forbidden_origin", "cross-origin requests are not allowed")
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    hub.sockets.add(ws)
    async for msg in ws:  # the panel sends nothing; keep the socket open until it closes
        if msg.type == WSMsgType.ERROR:
            break
    hub.sockets.discard(ws)
    return ws


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_ROOT / "standalone" / "index.html", headers={"Cache-Control": "no-cache"})


def _perimeter(settings: Settings):
    """Standalone, the whole app is ours: every request (the panel page, its files, the events
    socket) passes the Host check, and unknown paths and methods answer JSON like the API's."""

    @web.middleware
    async def perimeter(request: web.Request, handler) -> web.StreamResponse:
        refusal = host_refusal(request.headers.get("Host"), settings.allowed_hosts)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as e:
            response = error_response(405, "method_not_allowed", f"{request.method} is not allowed here; "
                                                                 f"use {', '.join(sorted(e.allowed_methods))}")
            response.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
            return response
        except web.HTTPNotFound:
            return error_response(404, "not_found", f"no such page: {request.path[:200]}")

    return perimeter


def create_app(settings: Settings) -> web.Application:
    """Application factory: build the Studio, register the shared routes, serve the panel."""
    register_secrets(settings.secret_values())
    install_log_filter()
    hub = EventHub()
    ref = StudioRef(lambda: Studio(settings, standalone_host(settings, hub)))
    app = web.Application(client_max_size=1024 * 1024, middlewares=[_perimeter(settings)])
    app[STUDIO_KEY] = ref
    app[EVENTS_KEY] = hub
    app.router.add_get(PREFIX + "/events", _events)  # before the routes' catch-all for the rest of PREFIX
    table = web.RouteTableDef()
    register_routes(table, ref, build_api())
    app.add_routes(table)
    app.router.add_get("/", _index)
    app.router.add_static("/lora-studio/web/", WEB_ROOT, follow_symlinks=False)

    async def on_startup(app: web.Application) -> None:
        hub.loop = asyncio.get_running_loop()
        await hub.loop.run_in_executor(None, ref.build)

    async def on_cleanup(app: web.Application) -> None:
        for ws in list(hub.sockets):
            await ws.close()
        await asyncio.get_running_loop().run_in_executor(None, ref.close)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
