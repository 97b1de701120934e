"""Run as a script: load a copy of the pack into ComfyUI stand-ins (see comfyui_standin.py), serve
its routes the way ComfyUI's `PromptServer.add_routes` does (each route also under `/api`, then
ComfyUI's own routes and its static frontend at `/`), and print a JSON report of how our routes and
ComfyUI's own answer DNS-rebinding hosts, non-JSON bodies, unknown paths and wrong methods.

usage: python comfyui_perimeter.py <pack folder> <comfyui root for folders>
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from comfyui_standin import install_standins, load_like_comfyui

EVIL = {"Host": "evil.example:8188", "Origin": "http://evil.example:8188"}


def serve_like_comfyui(root: Path) -> web.Application:
    from server import PromptServer

    server = PromptServer.instance

    @server.routes.get("/prompt")  # one of ComfyUI's own routes, registered the same way
    async def prompt_info(request):
        return web.json_response({"exec_info": {"queue_remaining": 0}})

    api_routes = web.RouteTableDef()
    for route in server.routes:
        if isinstance(route, web.RouteDef):
            api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
    server.app.add_routes(api_routes)
    server.app.add_routes(server.routes)
    (root / "web").mkdir(exist_ok=True)
    (root / "web" / "index.html").write_text("<html></html>")
    server.app.add_routes([web.static("/", root / "web")])
    return server.app


async def answer(response) -> dict:
    text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return {"status": response.status, "json": body, "allow": response.headers.get("Allow")}


async def exercise(app: web.Application) -> dict:
    out: dict = {}
    async with TestClient(TestServer(app)) as client:
        for prefix in ("/lora-studio/v1", "/api/lora-studio/v1"):
            key = prefix.strip("/").split("/")[0]
            out[f"{key}_health"] = await answer(await client.get(prefix + "/health"))
            out[f"{key}_rebind_read"] = await answer(await client.get(prefix + "/projects", headers=EVIL))
            out[f"{key}_rebind_write"] = await answer(await client.post(prefix + "/projects", json={"name": "Pwned"},
                                                                        headers=EVIL))
            out[f"{key}_configured_host"] = await answer(await client.get(
                prefix + "/projects", headers={"Host": "studio.lan:8188"}))
            out[f"{key}_text_body"] = await answer(await client.post(
                prefix + "/projects", data=b'{"name": "Pwned"}', headers={"Content-Type": "text/plain"}))
            out[f"{key}_unknown"] = await answer(await client.get(prefix + "/no-such-route"))
            out[f"{key}_unknown_rebind"] = await answer(await client.get(prefix + "/no-such-route", headers=EVIL))
            out[f"{key}_wrong_method"] = await answer(await client.delete(prefix + "/projects"))
        out["projects"] = (await (await client.get("/api/lora-studio/v1/projects")).json())["items"]
        # ComfyUI's own routes: untouched by our perimeter
        out["comfy_rebind"] = await answer(await client.get("/api/prompt", headers=EVIL))
        out["comfy_wrong_method"] = await answer(await client.delete("/prompt"))
        out["comfy_unknown"] = await answer(await client.get("/api/no-such-route"))
        out["comfy_static"] = await answer(await client.get("/index.html", headers=EVIL))
    return out


def main() -> None:
    folder, root = Path(sys.argv[1]), Path(sys.argv[2])
    install_standins(root)
    load_like_comfyui(folder)
    app = serve_like_comfyui(root)
    print(json.dumps(asyncio.run(exercise(app))))


if __name__ == "__main__":
    main()
