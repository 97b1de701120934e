"""Bringing images in: uploads, videos, URLs and ComfyUI outputs (each a job), classification and
auto-review."""

from __future__ import annotations

from ..core.errors import InvalidInput
from ..core.validation import Field, Spec, validate
from .api import Api, Req
from .uploads import stream_multipart

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


UPLOAD = ("Upload images (multipart field 'files', optional 'caption'): the files stream to disk, then a job "
          "(kind ingest_images) checks and places them as pending; its result is {created: [images], "
          "skipped: [{filename, reason}]}")

UPLOAD_FORM = {"files": Field(list, required=True, item=Field(bytes), min_items=1, max_items=200,
                              description="the image files (each part's filename is kept as the image's name)"),
               "caption": Field(str, max_len=10000, description="a caption for every image")}

MAX_FRAMES = 200  # the most frames one video may give

VIDEO_FORM = {"file": Field(bytes, required=True, description="the video"),
              "max_frames": Field(str, description=f"at most this many frames (1-{MAX_FRAMES})"),
              "caption": Field(str, max_len=2000)}

IMPORT_OUTPUTS_SPEC: Spec = {
    "paths": Field(list, items=(), description="output images as GET /gallery lists them"),
    "all": Field(bool, description="every image in the output folder (those the character has are skipped)"),
}

INGEST_URL_SPEC: Spec = {
    "url": Field(str, required=True, max_len=2000, description="http(s) URL of a video or a page with one"),
    "max_frames": Field(int, min=1, max=MAX_FRAMES),
    "caption": Field(str, max_len=2000),
}


def form_max_frames(value: str | None) -> int | None:
    """The video form's max_frames (a multipart text field); None when not given."""
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidInput("'max_frames' must be an integer") from None
    if not 1 <= n <= MAX_FRAMES:
        raise InvalidInput(f"'max_frames' must be between 1 and {MAX_FRAMES}")
    return n


async def _upload(r: Req, character_id: int | None, project_id: int | None):
    # 404 before reading the body, and a staging folder of the request's own
    studio, folder = await r.call(lambda s: (s, s.images.target(character_id, project_id) and s.uploads.new_staging()))
    try:
        files, fields = await stream_multipart(r.request, folder, studio.settings.max_upload_bytes)
    except BaseException:
        studio.uploads.discard(folder)
        raise
    caption = fields.get("caption", "").strip()
    return await r.call(lambda s: s.uploads.start(character_id, folder, files, caption, project_id=project_id))


@routes.route("POST", "/characters/{character_id}/images", UPLOAD, tag="images", status=202, form=UPLOAD_FORM,
              response="Job")
async def upload_images(r: Req):
    return await _upload(r, r.int_param("character_id"), None)


@routes.route("POST", "/projects/{project_id}/images", UPLOAD.replace("as pending", "as pending in the project's "
                                                                   "unassigned pool (for the classifier or a person)"),
              tag="images", status=202, form=UPLOAD_FORM, response="Job")
async def upload_project_images(r: Req):
    return await _upload(r, None, r.int_param("project_id"))


@routes.route("POST", "/characters/{character_id}/import-outputs",
              "Copy images from ComfyUI's output folder into the character's queue (a job), keeping their graphs",
              body=IMPORT_OUTPUTS_SPEC, tag="images", status=202, response="Job")
async def import_outputs(r: Req):
    return await _import_outputs(r, r.int_param("character_id"), None)


@routes.route("POST", "/projects/{project_id}/import-outputs",
              "Copy images from ComfyUI's output folder into the project's unassigned pool (a job)",
              body=IMPORT_OUTPUTS_SPEC, tag="images", status=202, response="Job")
async def import_outputs_to_pool(r: Req):
    return await _import_outputs(r, None, r.int_param("project_id"))


async def _import_outputs(r: Req, cid: int | None, pid: int | None):
    data = validate(await r.json(), IMPORT_OUTPUTS_SPEC)
    return await r.call(lambda s: s.output_imports.start(cid, paths=data.get("paths"), all_=data.get("all", False),
                                                         project_id=pid))


@routes.route("POST", "/characters/{character_id}/ingest/video",
              "Upload a video (multipart field 'file'; optional 'max_frames', 'caption'): a job picks distinct frames "
              "from its whole length", tag="ingest", status=202, form=VIDEO_FORM, response="Job")
async def ingest_video(r: Req):
    return await _ingest_video(r, r.int_param("character_id"), None)


@routes.route("POST", "/projects/{project_id}/ingest/video",
              "Upload a video (as for a character): the frames land in the project's unassigned pool (a job)",
              tag="ingest", status=202, form=VIDEO_FORM, response="Job")
async def ingest_video_to_pool(r: Req):
    return await _ingest_video(r, None, r.int_param("project_id"))

async def _ingest_video(r: Req, cid: int | None, pid: int | None):
    studio = await r.call(lambda s: s.images.target(cid, pid) and s)  # 404 before reading the body
    files, fields = await stream_multipart(r.request, studio.layout.staging_dir(),
                                           studio.settings.max_video_mb * 1024 * 1024, max_files=1, file_field="file")
    name, staged = files[0]
    try:
        max_frames = form_max_frames(fields.get("max_frames"))
    except InvalidInput:
        staged.unlink(missing_ok=True)
        raise
    return await r.call(lambda s: s.video_ingest.start_video(cid, name, staged, max_frames=max_frames,
                                                             caption=fields.get("caption", "")[:2000], project_id=pid))


@routes.route("POST", "/characters/{character_id}/ingest/url",
              "Download a video with yt-dlp (http/https; private addresses refused) and take frames from it (a job)",
              body=INGEST_URL_SPEC, tag="ingest", status=202, response="Job")
async def ingest_url(r: Req):
    return await _ingest_url(r, r.int_param("character_id"), None)


@routes.route("POST", "/projects/{project_id}/ingest/url",
              "Download a video with yt-dlp (as for a character): the frames land in the project's unassigned pool",
              body=INGEST_URL_SPEC, tag="ingest", status=202, response="Job")
async def ingest_url_to_pool(r: Req):
    return await _ingest_url(r, None, r.int_param("project_id"))


async def _ingest_url(r: Req, cid: int | None, pid: int | None):
    data = validate(await r.json(), INGEST_URL_SPEC)
    return await r.call(lambda s: s.video_ingest.start_url(cid, data["url"], max_frames=data.get("max_frames"),
                                                           caption=data.get("caption", ""), project_id=pid))


@routes.route("POST", "/projects/{project_id}/classify",
              "Suggest a character for each pending image of the project (a job); sure suggestions move the image",
              tag="ingest", status=202, response="Job")
async def classify_project(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.classification.start_classify(pid))


@routes.route("POST", "/characters/{character_id}/auto-review",
              "Automatic review of the character's pending images by the vision model (a job)", tag="ingest", status=202,
              response="Job")
async def auto_review(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.classification.start_review(cid))
