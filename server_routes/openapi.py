"""The OpenAPI 3 document, generated from the route declarations (`api.route`): every path and
query parameter with its type and bounds, JSON and multipart bodies, and every status a route
answers with its shape. The fuzz test (tests/integration/test_fuzz_api.py) holds the server to it."""

from __future__ import annotations

import re
from typing import Any

from ..core.validation import ID_MAX, Field, spec_schema
from .api import PREFIX, STATE_CHANGING, RouteSpec, api

# Path ids are read by `parse_id` (ASCII digits, at most ID_MAX).
ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": ID_MAX}
# Other path parameters are names (e.g. a training sample's file name).
NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255}

ERROR_TEXT = {
    400: "bad input (a malformed id, parameter or body)",
    403: "a Host name the studio does not serve, or a state-changing request from a page of another origin",
    404: "something the request names does not exist",
    409: "the request conflicts with the current state",
    413: "the body is larger than its limit",
    415: "a body that is not JSON (multipart/form-data for uploads)",
    502: "ComfyUI (or another upstream) answered with an error",
    503: "a component the request needs is missing or unreachable (the studio, ComfyUI, torch)",
}


def _statuses(spec: RouteSpec) -> list[int]:
    """Error statuses a route answers: 400, 403 (a foreign Host name) and 503 (the studio could not
    start) for every route, 404 for those that name something, 409 and 415 (a body of another media
    type, see perimeter.py) for writes, 413 for bodies, and what the route declares."""
    codes = {400, 403, 503, *spec.errors}
    if "{" in spec.path:
        codes.add(404)
    if spec.method in STATE_CHANGING:
        codes |= {409, 415}
    if spec.body is not None or spec.body_schema is not None or spec.form is not None:
        codes.add(413)
    return sorted(codes)


def _query_param(name: str, decl: str | Field) -> dict:
    if isinstance(decl, Field):
        schema = decl.json_schema()
        return {"name": name, "in": "query", "required": False, "description": schema.pop("description", ""),
                "schema": schema}
    return {"name": name, "in": "query", "required": False, "description": decl, "schema": {"type": "string"}}


def _operation(spec: RouteSpec) -> dict:
    op: dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag] if spec.tag else [],
                          "operationId": spec.handler.__name__}
    params = [{"name": n, "in": "path", "required": True, "schema": ID_SCHEMA if n.endswith("_id") else NAME_SCHEMA}
              for n in re.findall(r"{(\w+)}", spec.path)]
    params += [_query_param(n, d) for n, d in spec.query.items()]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec_schema(spec.body)}}}
    elif spec.body_schema is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec.body_schema}}}
    elif spec.form is not None:
        schema = spec_schema(spec.form)
        schema.pop("additionalProperties")  # a form may carry fields the route ignores
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    if spec.binary:
        ok = {"description": "the file", "content": {spec.media: {"schema": {"type": "string", "format": "binary"}}}}
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    responses: dict[str, Any] = {str(spec.status): ok}
    for code in _statuses(spec):
        responses[str(code)] = {"description": ERROR_TEXT.get(code, "error"),
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = responses
    return op


def openapi_document() -> dict:
    paths: dict[str, dict] = {}
    for spec in api.routes:
        paths.setdefault(PREFIX + spec.path, {})[spec.method.lower()] = _operation(spec)
    error = {"type": "object", "additionalProperties": False, "required": ["error"], "properties": {"error": {
        "type": "object", "additionalProperties": False, "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "LoRA Studio API", "version": "1",
                 "description": "Errors are {\"error\": {\"code\", \"message\"}} with a 4xx status (503/502 when "
                                "a component or ComfyUI is unavailable), never a 500."},
        "paths": paths,
        "components": {"schemas": {"Error": error}},
    }
