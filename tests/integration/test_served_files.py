"""Every route that sends a file sends its media type (WebP was application/octet-stream where the
platform's mimetypes database lacks it), from one explicit map."""

from __future__ import annotations

import pytest
from lora_studio.core.db import Database, utcnow
from lora_studio.core.schema import jobs
from lora_studio.server_routes.files import media_type
from support.api import V1, make_character, make_project, upload
from support.images import image_bytes

FORMATS = [("PNG", ".png", "image/png"), ("JPEG", ".jpg", "image/jpeg"), ("JPEG", ".jpeg", "image/jpeg"),
           ("WEBP", ".webp", "image/webp")]


@pytest.mark.parametrize(("name", "expected"), [
    ("a.png", "image/png"), ("a.JPG", "image/jpeg"), ("b/c.jpeg", "image/jpeg"), ("a.webp", "image/webp"),
    ("a.WebP", "image/webp"), ("a.gif", "image/gif"), ("clip.mp4", "video/mp4"), ("clip.webm", "video/webm"),
    ("set.zip", "application/zip"), ("a.txt", "application/octet-stream"), ("noext", "application/octet-stream"),
])
def test_the_media_type_map(name, expected):
    assert media_type(name) == expected


async def fetch(client, url: str) -> tuple[str, bytes, dict]:
    r = await client.get(url)
    assert r.status == 200, await r.text()
    return r.headers["Content-Type"], await r.read(), r.headers


async def test_image_gallery_and_sample_files_carry_their_media_type(client, settings):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    sent = {f"pic{n}{suffix}": (image_bytes(fmt, size=(40, 32), seed=50 + n), expected)
            for n, (fmt, suffix, expected) in enumerate(FORMATS)}
    created = (await upload(client, c["id"], *[(name, data, "application/octet-stream")
                                                for name, (data, _) in sent.items()]))["created"]
    assert len(created) == len(sent)
    for image in created:  # stored as <name>-<hash><suffix>
        stem = image["rel_path"].rsplit("/", 1)[-1].split("-")[0]
        data, expected = next(v for k, v in sent.items() if k.startswith(stem + "."))
        ctype, body, headers = await fetch(client, f"{V1}/images/{image['id']}/file")
        assert (ctype, body) == (expected, data)  # stored as they came, sent as what they are
        assert headers["X-Content-Type-Options"] == "nosniff"

    out = settings.comfyui_output_dir / "lora_studio"
    out.mkdir(parents=True)
    for name, (data, _) in sent.items():
        (out / name).write_bytes(data)
    for name, (data, expected) in sent.items():
        assert (await fetch(client, f"{V1}/gallery/file?path=lora_studio/{name}"))[:2] == (expected, data)

    db = Database(settings.effective_database_url)
    try:
        with db.begin() as conn:
            job_id = conn.execute(jobs.insert().values(
                kind="train", status="succeeded", payload={}, result={}, character_id=c["id"], created_at=utcnow(),
                updated_at=utcnow())).inserted_primary_key[0]
    finally:
        db.dispose()
    samples = settings.data_dir / "jobs" / str(job_id) / "samples"
    samples.mkdir(parents=True)
    for name, (data, _) in sent.items():
        (samples / name).write_bytes(data)
    for name, (data, expected) in sent.items():
        assert (await fetch(client, f"{V1}/jobs/{job_id}/samples/{name}"))[:2] == (expected, data)
