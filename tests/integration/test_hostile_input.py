"""Hostile input the fuzzers found answering 500: each is a clear 4xx with the error shape now, and
nothing is stored. NUL, CR and LF in multipart file names; over-long names, symlink loops and
/proc paths for files; lone surrogates in JSON text; NUL in query parameters (PostgreSQL refuses
NUL in text); JSON integers beyond 64 bits; deep nesting and non-finite numbers."""

from __future__ import annotations

import uuid

import pytest
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


def raw_multipart(disposition_filename: bytes, content: bytes, extra: bytes = b"") -> tuple[bytes, str]:
    """A multipart body written byte by byte (aiohttp's FormData would quote the name)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\n".encode() + b'Content-Disposition: form-data; name="files"; '
            + disposition_filename + b"\r\nContent-Type: image/png\r\n\r\n" + content + b"\r\n" + extra
            + f"--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
async def seeded(client):
    p = await make_project(client)
    c = await make_character(client, p["id"], design_prompt="1girl")
    created = (await upload(client, c["id"], ("a.png", image_bytes(seed=1), "image/png")))["created"]
    return client, p, c, created[0]


async def images_of(client, cid):
    return (await (await client.get(f"{V1}/characters/{cid}/images?status=all")).json())["items"]


async def test_control_characters_in_multipart_file_names_are_refused(seeded):
    client, _p, c, _image = seeded
    png = image_bytes(seed=2)
    names = [b'filename="a\x00b.png"', b'filename="a\rb.png"', b'filename="a\nb.png"',
             b"filename*=UTF-8''a%00b.png", b"filename*=UTF-8''a%0D%0Ab.png", b"filename*=UTF-8''a%0Ab.png",
             b"filename*=UTF-8''%ED%A0%80.png", b'filename="a\tb.png"']
    for name in names:
        body, ctype = raw_multipart(name, png)
        r = await client.post(f"{V1}/characters/{c['id']}/images", data=body, headers={"Content-Type": ctype})
        assert 400 <= r.status < 500, (name, r.status, await r.text())
        await assert_error(r, r.status)
    # a NUL in the caption field too
    body, ctype = raw_multipart(b'filename="ok.png"', png,
                                extra=b"")
    boundary = ctype.split("=", 1)[1]
    body = body.replace(f"--{boundary}--".encode(), f'--{boundary}\r\nContent-Disposition: form-data; '
                        f'name="caption"\r\n\r\nx\x00y\r\n--{boundary}--'.encode())
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=body, headers={"Content-Type": ctype})
    await assert_error(r, 400)
    assert len(await images_of(client, c["id"])) == 1  # nothing was added


async def test_gallery_file_over_long_loops_and_proc_paths(client, settings):
    out = settings.comfyui_output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop").symlink_to(out / "loop")
    (out / "a").symlink_to(out / "b")
    (out / "b").symlink_to(out / "a")
    for bad in ["x" * 300 + ".png", "d/" * 3000 + "x.png", "loop/x.png", "a/x.png", "/proc/self/environ",
                "/proc/self/root/etc/passwd", "../" * 40 + "proc/self/fd/0", "x" * 5000]:
        r = await client.get(f"{V1}/gallery/file", params={"path": bad})
        assert r.status in (400, 404), (bad[:40], r.status)
        await assert_error(r, r.status)


async def test_training_base_model_over_long_loops_and_proc_paths(seeded, settings):
    client, _p, c, _image = seeded
    models = settings.effective_models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "loop").symlink_to(models / "loop")
    (models / "up").symlink_to("/proc/self")
    url = f"{V1}/characters/{c['id']}/train"
    # the approved-images gate (2) comes before the model is looked up: approve two
    more = (await upload(client, c["id"], ("b.png", image_bytes(seed=3), "image/png")))["created"]
    for image in (_image, *more):
        await client.post(f"{V1}/images/{image['id']}/approve")
    r = await client.post(url, json={"base_model": "missing"})
    await assert_error(r, 404)  # the model lookup is reached
    for bad in ["m" * 300, "a/" * 240 + "m", "loop", "loop/unet", "up/environ", "/proc/self/environ",
                "\\\\server\\share\\m.safetensors", "C:\\m.safetensors"]:
        r = await client.post(url, json={"base_model": bad})
        assert r.status in (400, 404), (bad[:40], r.status, await r.text())
        await assert_error(r, r.status)


async def test_lone_surrogates_in_json_text_are_refused(seeded):
    client, p, c, image = seeded
    raw = '{"caption": "a\\ud800b"}'
    r = await client.patch(f"{V1}/images/{image['id']}", data=raw, headers={"Content-Type": "application/json"})
    await assert_error(r, 400)
    r = await client.patch(f"{V1}/characters/{c['id']}", data='{"name": "Aiko", "design_prompt": "\\udfff"}',
                           headers={"Content-Type": "application/json"})
    await assert_error(r, 400)
    r = await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", data='{"bad_quality": "x\\ud800"}',
                           headers={"Content-Type": "application/json"})
    await assert_error(r, 400)
    r = await client.put(f"{V1}/characters/{c['id']}/dropped-terms", data='{"terms": ["\\ud800"]}',
                         headers={"Content-Type": "application/json"})
    await assert_error(r, 400)
    r = await client.post(f"{V1}/projects", data='{"name": "\\ud800"}', headers={"Content-Type": "application/json"})
    await assert_error(r, 400)
    # nothing changed
    assert (await (await client.get(f"{V1}/images/{image['id']}")).json())["caption"] == ""
    assert (await (await client.get(f"{V1}/characters/{c['id']}")).json())["design_prompt"] == "1girl"


async def test_nul_in_query_parameters_and_json_text_is_refused(seeded):
    client, p, c, _image = seeded
    for url, params in [(f"{V1}/images", {"source": "up\x00load"}), (f"{V1}/images", {"since": "2024\x00"}),
                        (f"{V1}/jobs", {"kind": "train\x00"}), (f"{V1}/jobs", {"status": "\x00"}),
                        (f"{V1}/characters/{c['id']}/images", {"order": "\x00"}),
                        (f"{V1}/gallery", {"cursor": "1:\x00"}), (f"{V1}/gallery/file", {"path": "\x00"}),
                        (f"{V1}/characters/{c['id']}/export", {"class": "per\x00son"})]:
        r = await client.get(url, params=params)
        assert 400 <= r.status < 500, (url, params, r.status)
        await assert_error(r, r.status)
    r = await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", json={"bad_quality": "x\x00"})
    await assert_error(r, 400)
    r = await client.put(f"{V1}/characters/{c['id']}/dropped-terms", json={"terms": ["a\x00"]})
    await assert_error(r, 400)


async def test_integers_beyond_64_bits_and_other_numbers_json_allows(seeded):
    client, p, c, image = seeded
    headers = {"Content-Type": "application/json"}
    for body in ['{"image_ids": [18446744073709551616], "decision": "approve"}',
                 '{"image_ids": [-9223372036854775809], "decision": "approve"}',
                 '{"image_ids": [1e400], "decision": "approve"}',
                 '{"image_ids": ["1"], "decision": "approve"}',
                 '{"image_ids": [true], "decision": "approve"}']:
        r = await client.post(f"{V1}/images/decisions", data=body, headers=headers)
        await assert_error(r, 400)
    for body in ['{"character_id": 99999999999999999999999}', '{"character_id": 9223372036854775808}',
                 '{"character_id": 2147483648}']:  # ids are INTEGER columns (32-bit in PostgreSQL)
        r = await client.post(f"{V1}/images/{image['id']}/reassign", data=body, headers=headers)
        await assert_error(r, 400)
    # the largest id is a well-formed id that names nothing, in a body, a path or a query
    r = await client.post(f"{V1}/images/{image['id']}/reassign", data='{"character_id": 2147483647}',
                          headers=headers)
    await assert_error(r, 404)
    await assert_error(await client.get(f"{V1}/characters/2147483647"), 404)
    await assert_error(await client.get(f"{V1}/characters/2147483648"), 400)
    await assert_error(await client.get(f"{V1}/jobs/99999999999"), 400)
    for query in ("cursor=2147483648", "project_id=99999999999"):
        await assert_error(await client.get(f"{V1}/images?{query}"), 400)
    await assert_error(await client.get(f"{V1}/jobs?character_id=99999999999"), 400)
    for body in ['{"seed": 1e999}', '{"seed": NaN}', '{"seed": Infinity}', "[" * 100000 + "]" * 100000,
                 '{"seed": ' + "9" * 5000 + "}"]:
        r = await client.post(f"{V1}/characters/{c['id']}/generate", data=body, headers=headers)
        await assert_error(r, 400)
    r = await client.patch(f"{V1}/projects/{p['id']}/style", data='{"cfg": 1' + "0" * 400 + "}", headers=headers)
    await assert_error(r, 400)
    assert (await (await client.get(f"{V1}/images/{image['id']}")).json())["status"] == "pending"
