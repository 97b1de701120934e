"""HTTP adapters: one module per resource, each exposing `add_routes(api)`; `build_api()` composes them.

Handlers parse and validate the request (specs from `core.validation`), call one service on the studio in
a worker thread (`Req.call`) and shape the JSON; `api.py` holds the machinery and `openapi.py` derives the
OpenAPI document from the same declarations."""

from __future__ import annotations

from . import catalog, gallery, generation, images, ingest, jobs, meta, thumbnails, training
from .api import Api

RESOURCES = (meta, catalog, images, thumbnails, ingest, gallery, jobs, training, generation)


def build_api() -> Api:
    """Every route of the studio, in declaration order (the OpenAPI document lists them in this order)."""
    api = Api()
    for module in RESOURCES:
        module.add_routes(api)
    return api
