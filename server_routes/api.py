"""The route declarations' machinery: a registry of routes (also the source of the OpenAPI
document), the request wrapper handlers see, error shaping and the cross-origin check.

The same `register_routes` fills ComfyUI's `PromptServer.instance.routes` and the standalone app's
route table, so both serve identical routes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..core.errors import InvalidInput, StudioError
from ..core.redact import scrub
from ..core.validation import Spec, parse_uint

log = logging.getLogger("lora_studio.routes")

PREFIX = "/lora-studio/v1"
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
MAX_JSON_BYTES = 1024 * 1024


@dataclass
class RouteSpec:
    method: str
    path: str
    handler: Callable[[Req], Awaitable[Any]]
    summary: str
    body: Spec | None = None
    query: dict[str, str] = field(default_factory=dict)
    tag: str = ""
    status: int = 200
    binary: bool = False


class Api:
    """Collects route declarations from the route modules."""

    def __init__(self) -> None:
        self.routes: list[RouteSpec] = []

    def route(self, method: str, path: str, summary: str, *, body: Spec | None = None,
              query: dict[str, str] | None = None, tag: str = "", status: int = 200, binary: bool = False):
        def deco(fn):
            self.routes.append(RouteSpec(method, path, fn, summary, body, query or {}, tag, status, binary))
            return fn
        return deco


api = Api()


class Req:
    """What a handler sees: the request, `call` to run a service on the studio, and helpers that
    turn bad input into 4xx answers."""

    def __init__(self, request: web.Request, ref):
        self.request = request
        self.ref = ref

    def int_param(self, name: str) -> int:
        return parse_uint(self.request.match_info.get(name, ""), name)

    def q(self, name: str) -> str | None:
        return self.request.query.get(name)

    async def json(self) -> Any:
        if self.request.content_length is not None and self.request.content_length > MAX_JSON_BYTES:
            raise InvalidInput("the JSON body is too large", status=413)
        raw = await self.request.content.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise InvalidInput("the JSON body is too large", status=413)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidInput("the request body is not valid JSON") from None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a (blocking) service call in a worker thread, off the event loop."""
        studio = await asyncio.get_running_loop().run_in_executor(None, self.ref.get)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(studio, *args))


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": scrub(message)}}, status=status)


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """A state-changing request from a browser page of another origin is refused. No Origin
    header (curl, ComfyUI's /prompt API clients) is allowed; `Origin: null` (sandboxed frames,
    file:// pages, some redirects) is refused, unlike ComfyUI's own check."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin in allowed:
        return True
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


def _wrap(spec: RouteSpec, ref) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            if request.method in STATE_CHANGING:
                allowed = ref.get().settings.allowed_origins if ref.ready() else ()
                if not origin_allowed(request, allowed):
                    return error_response(403, "forbidden_origin", "cross-origin requests are not allowed")
            result = await spec.handler(Req(request, ref))
        except StudioError as e:
            return error_response(e.status, e.code, e.message)
        except web.HTTPException:
            raise
        except Exception:  # never a traceback to the client; the log has it
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error; see the server log")
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, status=spec.status, dumps=lambda o: json.dumps(o, default=str))

    handler.__name__ = spec.handler.__name__
    return handler


def register_routes(table: web.RouteTableDef, ref) -> None:
    """Add every declared route under PREFIX to `table` (ComfyUI's or the standalone app's)."""
    from . import all_routes  # noqa: F401  (imports the modules that declare routes)

    for spec in api.routes:
        table.route(spec.method, PREFIX + spec.path)(_wrap(spec, ref))


def openapi_document() -> dict:
    paths: dict[str, dict] = {}
    for spec in api.routes:
        path = PREFIX + spec.path
        op: dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag] if spec.tag else [],
                              "operationId": spec.handler.__name__}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "integer"}}
                  for n in re.findall(r"{(\w+)}", spec.path)]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
                   for n, d in spec.query.items()]
        if params:
            op["parameters"] = params
        if spec.body is not None:
            from ..core.validation import spec_schema

            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec_schema(spec.body)}}}
        ok = {"description": "OK"}
        if spec.binary:
            ok["content"] = {"application/octet-stream": {}}
        else:
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        op["responses"] = {str(spec.status): ok,
                           "4XX": {"description": "bad input", "content": {"application/json": {"schema": {
                               "$ref": "#/components/schemas/Error"}}}}}
        paths.setdefault(path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "LoRA Studio API", "version": "1"},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {
            "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"]}}, "required": ["error"]}}},
    }
