"""The route declarations' machinery: `Api` (a table of routes, also the source of the OpenAPI
document), the request wrapper handlers see, error shaping and the cross-origin check.

Each resource module (meta, catalog, images, thumbnails, ingest, gallery, jobs, training, generation) declares its
routes on a table of its own and exposes `add_routes(api)`; `server_routes.build_api()` composes them.
The same `register_routes` fills ComfyUI's `PromptServer.instance.routes` and the standalone app's
route table, so both serve identical routes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from ..core.errors import InvalidInput, StudioError
from ..core.redact import scrub
from ..core.validation import Field, Spec, check_query_value, parse_id, parse_json
from .perimeter import allowed_methods, body_refusal, host_refusal, needs_settings

if TYPE_CHECKING:  # a types-only reference to the composition root: the handlers' `s` is a Studio
    from ..core.ref import StudioRef
    from ..studio import Studio

T = TypeVar("T")

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
    query: dict[str, str | Field] = field(default_factory=dict)  # a str: a string parameter's description
    tag: str = ""
    status: int = 200
    binary: bool = False
    body_schema: dict | None = None  # a JSON body no Spec describes (e.g. keyed by category), as JSON Schema
    form: Spec | None = None  # a multipart body: its fields (Field(bytes) for a file, a list of them for files)
    errors: tuple[int, ...] = ()  # statuses beyond the ones every route of its kind answers (see openapi.py)
    media: str = "application/octet-stream"  # a binary answer's content type ("image/*", "application/zip")
    # a JSON answer's shape: a component name of openapi.py's RESPONSE_SCHEMAS ("Image") or a schema
    response: str | dict | None = None


class Api:
    """A table of route declarations: a resource module's own (filled by its `@routes.route(...)`
    decorators), or the whole API (`server_routes.build_api()`, which includes every module's)."""

    def __init__(self) -> None:
        self.routes: list[RouteSpec] = []

    def include(self, other: Api) -> None:
        self.routes.extend(other.routes)

    def route(self, method: str, path: str, summary: str, *, body: Spec | None = None,
              query: dict[str, str | Field] | None = None, tag: str = "", status: int = 200, binary: bool = False,
              body_schema: dict | None = None, form: Spec | None = None, errors: tuple[int, ...] = (),
              media: str = "application/octet-stream", response: str | dict | None = None):
        def deco(fn):
            self.routes.append(RouteSpec(method, path, fn, summary, body, query or {}, tag, status, binary,
                                         body_schema, form, errors, media, response))
            return fn
        return deco



class Req:
    """What a handler sees: the request, `call` to run a service on the studio, and helpers that
    turn bad input into 4xx answers."""

    def __init__(self, request: web.Request, ref: StudioRef[Studio], api: Api):
        self.request = request
        self.ref = ref
        self.api = api  # the whole API (the OpenAPI route describes it)

    def int_param(self, name: str) -> int:
        return parse_id(self.request.match_info.get(name, ""), name)

    def q(self, name: str) -> str | None:
        value = self.request.query.get(name)
        return None if value is None else check_query_value(name, value)

    async def json(self) -> Any:
        if self.request.content_length is not None and self.request.content_length > MAX_JSON_BYTES:
            raise InvalidInput("the JSON body is too large", status=413)
        raw = await self.request.content.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise InvalidInput("the JSON body is too large", status=413)
        if not raw.strip():
            return {}
        return parse_json(raw)

    async def call(self, fn: Callable[[Studio], T]) -> T:
        """Run a (blocking) service call on the studio in a worker thread, off the event loop."""
        studio = await asyncio.get_running_loop().run_in_executor(None, self.ref.get)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(studio))


def to_json(value: Any) -> Any:
    """json.dumps' fallback for what a service returns: a dataclass record (at any depth) becomes its
    fields, in order, as the API answers it; anything else (a datetime, a path) its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


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


def _settle(ref) -> None:
    """Wait until the studio is built or has failed (a failure is the handler's 503 to report)."""
    try:
        ref.get()
    except StudioError:
        pass


async def perimeter_refusal(request: web.Request, ref) -> web.Response | None:
    """The answer for a request our routes must not serve (see perimeter.py), else None: a Host
    name that is not ours (every request), then a foreign Origin (state-changing requests)."""
    host = request.headers.get("Host")
    if needs_settings(host) and not ref.ready():  # only allowed_hosts can pass it: wait for the settings
        await asyncio.get_running_loop().run_in_executor(None, _settle, ref)
    settings = ref.get().settings if ref.ready() else None
    refusal = host_refusal(host, settings.allowed_hosts if settings else ())
    if refusal is not None:
        return refusal
    if request.method in STATE_CHANGING and not origin_allowed(request, settings.allowed_origins if settings else ()):
        return error_response(403, "forbidden_origin", "cross-origin requests are not allowed")
    return None


def _wrap(spec: RouteSpec, ref, api: Api) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    upload = spec.form is not None  # a multipart route; every other route's body is JSON
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            refusal = await perimeter_refusal(request, ref)
            if refusal is None and request.method in STATE_CHANGING:
                refusal = body_refusal(request, upload)
            if refusal is not None:
                return refusal
            result = await spec.handler(Req(request, ref, api))
        except StudioError as e:
            return error_response(e.status, e.code, e.message)
        except web.HTTPException:
            raise
        except Exception:  # never a traceback to the client; the log has it
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error; see the server log")
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, status=spec.status, dumps=lambda o: json.dumps(o, default=to_json))

    handler.__name__ = spec.handler.__name__
    return handler


def register_routes(table: web.RouteTableDef, ref, api: Api) -> None:
    """Add every route of `api` under PREFIX to `table` (ComfyUI's or the standalone app's)."""
    for spec in api.routes:
        table.route(spec.method, PREFIX + spec.path)(_wrap(spec, ref, api))
    # Last, so every declared route resolves first: the rest of our prefix answers JSON 404/405
    # (inside ComfyUI also under its /api alias; ComfyUI's own paths are never matched).
    table.route("*", PREFIX + "{tail:(/.*)?}")(_unmatched(ref))


def _unmatched(ref) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def unmatched(request: web.Request) -> web.StreamResponse:
        refusal = await perimeter_refusal(request, ref)
        if refusal is not None:
            return refusal
        prefix = request.match_info.route.resource.canonical.split("{", 1)[0]  # PREFIX or ComfyUI's /api + PREFIX
        methods = await allowed_methods(request, prefix)
        if methods:
            response = error_response(405, "method_not_allowed",
                                      f"{request.method} is not allowed here; use {', '.join(sorted(methods))}")
            response.headers["Allow"] = ", ".join(sorted(methods))
            return response
        return error_response(404, "not_found", f"no such route: {request.method} {request.path[:200]} "
                                                f"(the routes are listed at {PREFIX}/openapi.json)")

    return unmatched
