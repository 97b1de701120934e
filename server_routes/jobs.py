"""Jobs: the queue of long work (ingest, classification, training, regeneration)."""

from __future__ import annotations

from ..core.validation import ID_MAX, Field, parse_id, parse_id_cursor, parse_limit
from .api import Api, Req

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


ID = Field(int, min=0, max=ID_MAX)


@routes.route("GET", "/jobs", "Jobs, newest first",
              query={"status": "filter", "kind": "filter", "limit": Field(int, min=1, max=500, description="1-500"),
                  "character_id": ID, "cursor": ID}, tag="jobs", response="JobPage")
async def list_jobs(r: Req):
    status, kind = r.q("status") or None, r.q("kind") or None
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    cid = parse_id(r.q("character_id"), "character_id") if r.q("character_id") else None
    return await r.call(lambda s: s.jobs.list(status=status, kind=kind, character_id=cid, limit=limit, cursor=cursor))


@routes.route("GET", "/jobs/{job_id}", "Get a job (status, progress, message, error, result)", tag="jobs", response="Job")
async def get_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.get(jid))


@routes.route("POST", "/jobs/{job_id}/cancel", "Cancel a queued or running job", tag="jobs", response="Job")
async def cancel_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.cancel(jid))
