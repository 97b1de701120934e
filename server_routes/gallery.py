"""ComfyUI's output folder: indexed pages of images and videos with their generation parameters, their
files, and the actions on them (favourite, to a dataset, trash and restore, a reindex)."""

from __future__ import annotations

from ..core.errors import InvalidInput
from ..core.validation import ID_MAX, Field, parse_id, parse_limit, validate
from .api import Api, Req
from .files import file_response

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


MAX_LIMIT = 200
LIMIT = Field(int, min=1, max=MAX_LIMIT, description=f"page size, 1-{MAX_LIMIT} (default 50)")
FLAG = ("true", "false")
QUERY = {
    "limit": LIMIT, "cursor": "from next_cursor",
    "character_id": Field(int, min=0, max=ID_MAX, description="only outputs of this character"),
    "project_id": Field(int, min=0, max=ID_MAX, description="only outputs of this project"),
    "kind": Field(str, choices=("image", "video"), description="image | video (animated WebP/PNG/GIF are video)"),
    "since": "ISO 8601: modified at or after", "until": "ISO 8601: modified before",
    "lora": Field(str, max_len=500, description="only outputs whose graph loaded this LoRA (a name of /gallery/loras)"),
    "q": Field(str, max_len=200, description="words in the prompts or the file name (each a prefix; all must match)"),
    "favourite": Field(str, choices=FLAG, description="true: only favourites | false: only the others"),
    "trashed": Field(str, choices=FLAG, description="true: the trash | false: the rest (default)"),
}
FAVOURITE_SPEC = {"favourite": Field(bool, required=True)}
TO_DATASET_SPEC = {"character_id": Field(int, required=True, min=0, max=ID_MAX,
                                         description="the character whose pending queue gets the image")}


def _flag(r: Req, name: str) -> bool | None:
    value = r.q(name)
    if value in (None, ""):
        return None
    if value not in FLAG:
        raise InvalidInput(f"'{name}' must be true or false")
    return value == "true"


def _id(r: Req, name: str) -> int | None:
    value = r.q(name)
    return None if value in (None, "") else parse_id(value, name)


def gallery_filters(r: Req):
    from ..datasets.gallery import GalleryFilters  # here: declaring routes imports no database code

    kind = r.q("kind") or None
    if kind not in (None, "image", "video"):
        raise InvalidInput("'kind' must be image or video")
    for name, most in (("lora", 500), ("q", 200), ("since", 64), ("until", 64)):
        if len(r.q(name) or "") > most:
            raise InvalidInput(f"'{name}' is longer than {most} characters")
    return GalleryFilters(character_id=_id(r, "character_id"), project_id=_id(r, "project_id"), kind=kind,
                          since=r.q("since") or None, until=r.q("until") or None, lora=r.q("lora") or None,
                          q=r.q("q") or None, favourite=_flag(r, "favourite"), trashed=bool(_flag(r, "trashed")))


@routes.route("GET", "/gallery", "Images and videos of ComfyUI's output folder (indexed), newest first, filtered",
              query=QUERY, tag="gallery", response="GalleryPage")
async def gallery(r: Req):
    limit, cursor, filters = parse_limit(r.q("limit"), maximum=MAX_LIMIT), r.q("cursor"), gallery_filters(r)
    return await r.call(lambda s: s.gallery.list(limit, cursor, filters))


@routes.route("GET", "/gallery/file", "One image or video of the output folder, with its media type (video: "
              "Range requests answer 206 with the part)",
              query={"path": Field(str, required=True, description="relative path from /gallery")},
              tag="gallery", binary=True, media="*/*", errors=(404,))
async def gallery_file(r: Req):
    rel = r.q("path") or ""
    path = await r.call(lambda s: s.gallery.file(rel))
    return file_response(path)


@routes.route("GET", "/gallery/loras", "The LoRAs the indexed outputs loaded, with how many each (the LoRA filter)",
              tag="gallery", response="GalleryLoras")
async def gallery_loras(r: Req):
    return {"items": await r.call(lambda s: s.gallery.loras())}


@routes.route("POST", "/gallery/reindex", "Index the output folder now (a job: a full pass, which reads only new "
              "and changed files)", tag="gallery", status=202, response="Job")
async def gallery_reindex(r: Req):
    return await r.call(lambda s: s.gallery.reindex())


@routes.route("POST", "/gallery/trash/empty", "Delete the trashed outputs for good", tag="gallery",
              response="GalleryTrashEmptied")
async def gallery_empty_trash(r: Req):
    return await r.call(lambda s: s.gallery.empty_trash())


@routes.route("GET", "/gallery/{item_id}", "One output with its parameters", tag="gallery", response="GalleryItem")
async def gallery_item(r: Req):
    item_id = r.int_param("item_id")
    return await r.call(lambda s: s.gallery.get(item_id))


@routes.route("POST", "/gallery/{item_id}/favourite", "Mark or unmark an output as a favourite", body=FAVOURITE_SPEC,
              tag="gallery", response="GalleryItem")
async def gallery_favourite(r: Req):
    item_id = r.int_param("item_id")
    data = validate(await r.json(), FAVOURITE_SPEC)
    return await r.call(lambda s: s.gallery.set_favourite(item_id, data["favourite"]))


@routes.route("POST", "/gallery/{item_id}/to-dataset", "Copy an output image into a character's pending queue, its "
              "parameters and graph as metadata", body=TO_DATASET_SPEC, tag="gallery", status=201, response="Image")
async def gallery_to_dataset(r: Req):
    item_id = r.int_param("item_id")
    data = validate(await r.json(), TO_DATASET_SPEC)
    return await r.call(lambda s: s.gallery.to_dataset(item_id, data["character_id"]))


@routes.route("POST", "/gallery/{item_id}/trash", "Move an output to the trash inside the output folder (restorable)",
              tag="gallery", response="GalleryItem")
async def gallery_trash(r: Req):
    item_id = r.int_param("item_id")
    return await r.call(lambda s: s.gallery.trash(item_id))


@routes.route("POST", "/gallery/{item_id}/restore", "Move a trashed output back to where it was", tag="gallery",
              response="GalleryItem")
async def gallery_restore(r: Req):
    item_id = r.int_param("item_id")
    return await r.call(lambda s: s.gallery.restore(item_id))
