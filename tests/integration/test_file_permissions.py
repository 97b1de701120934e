"""Images and captions the studio places in a dataset (uploaded, imported from ComfyUI's outputs)
have the permissions of any other new file: readable by other tools under umask 022, private
under 077."""

from __future__ import annotations

import os
import stat

import pytest
from support.api import V1, finished, make_character, make_project, upload
from support.images import image_bytes


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # file-system behaviour: one database is enough
@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
                         ids=["umask022", "umask077"])
async def test_dataset_files_follow_the_umask(make_client, settings, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        client = await make_client(settings)
        p = await make_project(client)
        c = await make_character(client, p["id"])
        created = (await upload(client, c["id"], ("a.png", image_bytes(seed=80), "image/png"), caption="x"))["created"]
        out = settings.comfyui_output_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "gen.png").write_bytes(image_bytes(seed=81))
        r = await client.post(f"{V1}/characters/{c['id']}/import-outputs", json={"paths": ["gen.png"]})
        job = await finished(client, await r.json())
        assert job["status"] == "succeeded" and len(job["result"]["created"]) == 1, job
    finally:
        os.umask(old)
    root = settings.effective_datasets_dir
    folder = root / created[0]["rel_path"].rsplit("/", 1)[0]
    images = sorted(folder.glob("*.png"))
    assert len(images) == 2
    for path in [*images, *(image.with_suffix(".txt") for image in images)]:
        assert mode(path) == file_mode, (path.name, oct(mode(path)))
    for d in (folder, folder.parent, folder.parent.parent):
        assert mode(d) == dir_mode, (d, oct(mode(d)))
