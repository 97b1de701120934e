"""The review queue: image records and files, decisions and undo, reconciliation and export."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from aiohttp import web

from ..core.categories import CATEGORIES
from ..core.errors import InvalidInput
from ..core.validation import ID_MAX, Field, Spec, parse_id, parse_id_cursor, parse_limit, parse_uint, validate
from .api import Api, Req
from .files import file_response

if TYPE_CHECKING:
    from ..datasets.images import ImageFilters

log = logging.getLogger("lora_studio.routes.images")

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


EXPORT_CHUNK = 1 << 20
# datasets.review's (ReviewService refuses larger batches too); not imported from there: declaring the
# routes at ComfyUI start-up must not import database code (tests/unit/test_comfyui_load.py)
MAX_BATCH = 1000
DECISIONS = ("approve", "reject", "reset")

REJECT_SPEC: Spec = {
    "regenerate": Field(bool, description="queue a generation with the refined negatives (default: the setting)"),
    "categories": Field(list, items=tuple(CATEGORIES), description="rejection categories (see /feedback/categories)"),
    "note": Field(str, max_len=5000),
}

IMAGE_SPEC: Spec = {
    "caption": Field(str, max_len=10000, description="written to the .txt beside the image too"),
}

REASSIGN_SPEC: Spec = {
    "character_id": Field(int, min=1, max=ID_MAX, description="the character to move the image to"),
    "unassigned": Field(bool, description="true: back to the project's unassigned pool (instead of character_id)"),
}

DECIDE_SPEC: Spec = {
    "image_ids": Field(list, required=True, item=Field(int, min=1, max=ID_MAX), min_items=1, max_items=MAX_BATCH,
                       description=f"ids of the images to decide on (1-{MAX_BATCH})"),
    "decision": Field(str, required=True, choices=DECISIONS),
    "regenerate": Field(bool, description="after a rejection, queue generations (default: the setting)"),
    "categories": Field(list, items=tuple(CATEGORIES), description="rejection categories"),
    "note": Field(str, max_len=5000),
}

LIMIT = Field(int, min=1, max=500, description="page size, 1-500 (default 50)")

ID_CURSOR = Field(int, min=0, max=ID_MAX, description="from next_cursor")

FLAG = ("true", "false")

QUERY = {"status": Field(str, choices=("pending", "approved", "rejected", "all"), description="default pending"),
         "source": "e.g. upload, comfyui",
         "since": "ISO 8601, created at or after", "until": "ISO 8601, created before",
         "has_caption": Field(str, choices=FLAG),
         "min_confidence": Field(float, min=0.0, max=1.0, description="classifier suggestion at least this sure"),
         "unassigned": Field(str, choices=FLAG, description="true: only images without a character (the pool) | "
                             "false: only images with one"),
         "order": Field(str, choices=("oldest", "newest"), description="default oldest"), "limit": LIMIT,
         "cursor": ID_CURSOR}

def image_filters(r: Req, **scope: int | None) -> ImageFilters:
    """The query's filters; `scope`: character_id or project_id."""
    from ..datasets.images import ImageFilters  # here, not at the top: declaring routes imports no database code

    status = r.q("status") or "pending"
    has_caption = r.q("has_caption")
    if has_caption not in (None, "", "true", "false"):
        raise InvalidInput("'has_caption' must be true or false")
    confidence = r.q("min_confidence")
    try:
        min_confidence = float(confidence) if confidence else None
    except ValueError:
        raise InvalidInput("'min_confidence' must be a number between 0 and 1") from None
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise InvalidInput("'min_confidence' must be a number between 0 and 1")
    unassigned = r.q("unassigned")
    if unassigned not in (None, "", "true", "false"):
        raise InvalidInput("'unassigned' must be true or false")
    return ImageFilters(**scope, unassigned=None if not unassigned else unassigned == "true",
                        status=None if status == "all" else status, source=r.q("source"),
                        min_confidence=min_confidence, since=r.q("since"), until=r.q("until"),
                        order=r.q("order") or "oldest", has_caption=None if not has_caption else has_caption == "true")


@routes.route("GET", "/characters/{character_id}/images", "A character's images (the review queue)", query=QUERY,
              tag="images", response="ImagePage")
async def list_images(r: Req):
    filters = image_filters(r, character_id=r.int_param("character_id"))
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.images.search(filters, limit, cursor))


@routes.route("GET", "/images", "Images across the studio or a project", tag="images", errors=(404,),
              query={**QUERY, "project_id": Field(int, min=0, max=ID_MAX, description="only this project's images")},
              response="ImagePage")
async def search_images(r: Req):
    project = r.q("project_id")
    filters = image_filters(r, project_id=parse_id(project, "project_id") if project else None)
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.images.search(filters, limit, cursor))


@routes.route("GET", "/projects/{project_id}/images", "A project's images (unassigned=true: its unassigned pool)",
              query=QUERY, tag="images", response="ImagePage")
async def project_images(r: Req):
    filters = image_filters(r, project_id=r.int_param("project_id"))
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.images.search(filters, limit, cursor))


@routes.route("PATCH", "/images/{image_id}", "Edit an image's caption (the .txt file follows)", body=IMAGE_SPEC,
              tag="images", response="Image")
async def update_image(r: Req):
    iid, data = r.int_param("image_id"), validate(await r.json(), IMAGE_SPEC)
    return await r.call(lambda s: s.images.update(iid, caption=data.get("caption")))


@routes.route("POST", "/images/{image_id}/reassign",
              "Move an image (files and record) to a character ({character_id}) or to its project's unassigned pool "
              "({unassigned: true})",
              body=REASSIGN_SPEC, tag="images", response="Image")
async def reassign_image(r: Req):
    iid, data = r.int_param("image_id"), validate(await r.json(), REASSIGN_SPEC)
    return await r.call(lambda s: s.images.reassign(iid, character_id=data.get("character_id"),
                                                    unassigned=data.get("unassigned", False)))


@routes.route("GET", "/images/{image_id}", "Get an image record", tag="images", response="Image")
async def get_image(r: Req):
    iid = r.int_param("image_id")
    return await r.call(lambda s: s.images.get(iid))


@routes.route("GET", "/images/{image_id}/file", "The image file", tag="images", binary=True, media="image/*")
async def image_file(r: Req):
    iid = r.int_param("image_id")
    path = await r.call(lambda s: s.images.file_path(iid))
    return file_response(path)


@routes.route("POST", "/images/{image_id}/approve", "Approve an image", tag="images", response="Image")
async def approve_image(r: Req):
    iid = r.int_param("image_id")
    return await r.call(lambda s: s.review.approve(iid))


@routes.route("POST", "/images/{image_id}/reject", "Reject an image with categories and/or a note",
              body=REJECT_SPEC, tag="images", response="RejectedImage")
async def reject_image(r: Req):
    iid, data = r.int_param("image_id"), validate(await r.json(), REJECT_SPEC)
    return await r.call(lambda s: s.review.reject(iid, categories=data.get("categories", ()), note=data.get("note", ""),
                                                  regenerate=data.get("regenerate")))


@routes.route("POST", "/images/decisions", "Approve, reject or reset many images in one transaction",
              body=DECIDE_SPEC, tag="images", errors=(404,), response="DecisionResult")
async def decide_images(r: Req):
    data = validate(await r.json(), DECIDE_SPEC)
    return await r.call(lambda s: s.review.decide(data["image_ids"], data["decision"],
                                                  categories=data.get("categories", ()), note=data.get("note", ""),
                                                  regenerate=data.get("regenerate")))


@routes.route("POST", "/characters/{character_id}/undo", "Undo the character's last decision (batch)", tag="images",
              response="UndoResult")
async def undo_character(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.review.undo(cid))


@routes.route("POST", "/decisions/undo", "Undo the studio's last decision (batch)", tag="images", response="UndoResult")
async def undo_last(r: Req):
    return await r.call(lambda s: s.review.undo(None))


@routes.route("POST", "/datasets/reconcile",
              "Adopt image files that have no record (as pending) and flag records whose file is gone",
              tag="images", status=202, response="Job")
async def reconcile_datasets(r: Req):
    return await r.call(lambda s: s.jobs.submit("reconcile", {}))


@routes.route("GET", "/characters/{character_id}/export",
              "The approved images as a zip in kohya's layout (<repeats>_<trigger> <class>/ with .txt captions)",
              query={"repeats": Field(int, min=1, max=1000, description="default 10"),
                  "class": Field(str, max_len=100, description="class word (default person)")}, tag="images",
              binary=True, media="application/zip")
async def export_character(r: Req):
    cid = r.int_param("character_id")
    repeats = parse_uint(r.q("repeats") or "10", "repeats")
    class_token = r.q("class") or "person"
    building = asyncio.ensure_future(r.call(lambda s: s.exports.build(cid, repeats, class_token)))  # in a worker thread
    try:
        export = await asyncio.shield(building)
    except asyncio.CancelledError:  # the client left while the zip was being built: remove it once it is
        building.add_done_callback(lambda f: f.cancelled() or f.exception() is not None or f.result().remove())
        raise
    try:
        return await _send_file(r.request, export.path, {
            "Content-Disposition": export.content_disposition, "Content-Type": "application/zip",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
    finally:  # also when the client went away mid-download (the handler is cancelled or its write fails)
        export.remove()

async def _send_file(request: web.Request, path, headers: dict) -> web.StreamResponse:
    """Stream a file in chunks, each read in a worker thread: a large file never blocks the event loop."""
    loop = asyncio.get_running_loop()
    f = await loop.run_in_executor(None, open, path, "rb")
    try:
        size = await loop.run_in_executor(None, lambda: os.fstat(f.fileno()).st_size)
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        try:
            await response.prepare(request)
            while chunk := await loop.run_in_executor(None, f.read, EXPORT_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:  # the client went away: nothing to answer
            log.info("export download of %s stopped: the client disconnected", path.name)
        return response
    finally:
        await loop.run_in_executor(None, f.close)
