"""Health, the OpenAPI document and reference lists."""

from __future__ import annotations

from ..core.categories import CATEGORIES
from .api import Api, Req
from .openapi import openapi_document

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


@routes.route("GET", "/health", "Studio status (database kind, version, host)", tag="meta", response="Health")
async def health(r: Req):
    return await r.call(lambda s: s.health())


@routes.route("GET", "/openapi.json", "This API's OpenAPI 3 document", tag="meta", response="OpenApiDocument")
async def openapi(r: Req):
    return openapi_document(r.api)


@routes.route("GET", "/feedback/categories", "Rejection categories and the negative terms each adds", tag="meta",
              response="Categories")
async def categories(r: Req):
    return {"categories": CATEGORIES}
