"""Video upload and URL ingest through the API: jobs that land distinct frames as pending images;
bad videos fail the job with a message and leave nothing behind; private addresses are refused."""

from __future__ import annotations

import aiohttp
from support.api import V1, assert_error, finished, make_character, make_project
from support.http_video_server import serve_videos
from support.videos import encode_video, pattern


def video_form(path, name=None, **fields):
    data = aiohttp.FormData()
    data.add_field("file", path.read_bytes(), filename=name or path.name, content_type="video/mp4")
    for k, v in fields.items():
        data.add_field(k, str(v))
    return data


async def character(client):
    p = await make_project(client)
    return await make_character(client, p["id"])


async def test_video_upload_lands_frames_from_every_scene(client, settings, tmp_path):
    c = await character(client)
    video = encode_video(tmp_path / "clip.mp4", [(1.5, pattern(1)), (1.5, pattern(2)), (1.5, pattern(3))])
    r = await client.post(f"{V1}/characters/{c['id']}/ingest/video", data=video_form(video, caption="aiko", max_frames=6))
    assert r.status == 202, await r.text()
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded", job
    assert 3 <= len(job["result"]["created"]) <= 6
    items = (await (await client.get(f"{V1}/characters/{c['id']}/images?limit=50")).json())["items"]
    assert len(items) == len(job["result"]["created"])
    times = sorted(i["metadata"]["time_s"] for i in items)
    assert times[0] < 1.5 and times[-1] >= 3.0  # frames from the whole video, not its start
    assert all(i["source"] == "video" and i["caption"] == "aiko" and i["metadata"]["video"] == "clip.mp4" for i in items)
    assert not any((settings.data_dir / "ingest").iterdir())  # the uploaded video is gone after the job


async def test_bad_videos(client, settings, tmp_path):
    c = await character(client)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video" * 100)
    job = await finished(client, await (await client.post(f"{V1}/characters/{c['id']}/ingest/video",
                                                          data=video_form(junk))).json())
    assert job["status"] == "failed" and "not a readable video" in job["error"]
    assert (await (await client.get(f"{V1}/characters/{c['id']}/images?status=all")).json())["items"] == []
    assert not any((settings.data_dir / "ingest").iterdir())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/ingest/video", data=video_form(text)), 400)
    await assert_error(await client.post(f"{V1}/characters/999/ingest/video", data=video_form(junk)), 404)
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/ingest/video",
                                         data=video_form(junk, max_frames=0)), 400)
    assert list((settings.effective_datasets_dir / ".staging").iterdir()) == []


async def test_url_ingest_and_private_addresses(make_client):
    with serve_videos() as server:
        client = await make_client(ingest_allowed_hosts=(server.host_port,))
        c = await character(client)
        r = await client.post(f"{V1}/characters/{c['id']}/ingest/url", json={"url": server.url("/page.html"),
                                                                               "max_frames": 3})
        assert r.status == 202, await r.text()
        job = await finished(client, await r.json())
        assert job["status"] == "succeeded", job
        assert 1 <= len(job["result"]["created"]) <= 3
        image = await (await client.get(f"{V1}/images/{job['result']['created'][0]}")).json()
        assert image["source"] == "video" and image["metadata"]["url"].startswith(server.url("/"))
    with serve_videos() as other:
        err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/ingest/url",
                                                   json={"url": other.url("/video.mp4")}), 400)
        assert "loopback address" in err["message"] and "only public addresses" in err["message"]
        assert other.connections == 0
    for url in ["file:///etc/passwd", "ftp://example.com/x.mp4", "javascript:alert(1)"]:
        await assert_error(await client.post(f"{V1}/characters/{c['id']}/ingest/url", json={"url": url}), 400)
