"""Import from ComfyUI's output folder: the PNG's embedded graph comes along as metadata; the
output folder is only read."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.api import V1, assert_error, finished, make_character, make_project
from support.images import image_bytes

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "samples" / "comfyui_output_with_metadata.png"




async def test_import_selected_and_all_new(client, settings):
    out = settings.comfyui_output_dir
    (out / "lora_studio").mkdir(parents=True)
    shutil.copy(SAMPLE, out / "lora_studio" / "aiko_00001_.png")
    (out / "other_00001_.png").write_bytes(image_bytes(seed=77))
    p = await make_project(client)
    c = await make_character(client, p["id"])

    r = await client.post(f"{V1}/characters/{c['id']}/import-outputs", json={"paths": ["lora_studio/aiko_00001_.png"]})
    assert r.status == 202
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded" and len(job["result"]["created"]) == 1
    image = await (await client.get(f"{V1}/images/{job['result']['created'][0]}")).json()
    assert image["source"] == "comfyui_output" and image["status"] == "pending"
    assert image["metadata"]["prompt"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert image["metadata"]["workflow"] == {"note": "api-format submission"}
    assert image["metadata"]["output_path"] == "lora_studio/aiko_00001_.png"
    assert (out / "lora_studio" / "aiko_00001_.png").read_bytes() == SAMPLE.read_bytes()  # not moved

    job = await finished(client, await (await client.post(f"{V1}/characters/{c['id']}/import-outputs",
                                                          json={"all": True})).json())
    assert len(job["result"]["created"]) == 1  # the new one; the imported one is a duplicate
    assert [s["filename"] for s in job["result"]["skipped"]] == ["lora_studio/aiko_00001_.png"]

    job = await finished(client, await (await client.post(f"{V1}/characters/{c['id']}/import-outputs",
                                                          json={"paths": ["../../etc/passwd", "nope.png"]})).json())
    assert job["status"] == "succeeded" and job["result"]["created"] == []
    assert len(job["result"]["skipped"]) == 2


async def test_import_outputs_bad_requests(client, make_client):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    url = f"{V1}/characters/{c['id']}/import-outputs"
    for body in [{}, {"paths": []}, {"paths": ["a.png"], "all": True}, {"paths": [1]}]:
        await assert_error(await client.post(url, json=body), 400)
    await assert_error(await client.post(f"{V1}/characters/999/import-outputs", json={"all": True}), 404)
    no_output = await make_client(comfyui_output_dir=None)  # same database, no output folder
    await assert_error(await no_output.post(url, json={"all": True}), 503)
