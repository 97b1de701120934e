"""Path traversal: a few hundred hostile names (encoded, double-encoded, overlong UTF-8, full-width
dots, mixed separators, absolute/drive/UNC forms, NUL, over-long, reserved device names, /proc, and
symlinks planted in the data, jobs, models and ComfyUI output folders that lead out) against every
route and node input that names a file. A secret file lives outside every root: its marker must
never appear in an answer, no file may appear outside the roots, and no answer is a 5xx."""

from __future__ import annotations

import io
import os
import types
import uuid
import zipfile
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from lora_studio.app import STUDIO_KEY
from lora_studio.core.errors import InvalidInput, StudioError
from support.api import V1, assert_error, finished, make_character, make_project, upload
from support.images import image_bytes, noise_png

MARKER = b"TOPSECRET-" + uuid.uuid4().hex.encode()
RESERVED = ["CON", "NUL.txt", "con.png", "AUX", "PRN.png", "COM1", "LPT1.png", "nul", "CONIN$", "CLOCK$",
            "NUL.png", "com1.png"]


def payloads(secret: Path) -> list[str]:
    """Hostile names that try to reach `secret` (or well-known files) from inside a root."""
    ups = ["../", "..\\", "..//", "..\\\\", "../\\", ".../", "....//", "..;/", "%2e%2e%2f", "%2e%2e/", "..%2f",
           "%2e%2e%5c", "..%5c", "%252e%252e%252f", "..%252f", "%c0%ae%c0%ae%c0%af", "%c0%ae%c0%ae/",
           "%e0%80%ae%e0%80%ae/", "%c0%2e%c0%2e/", "..%c0%af", "..%c1%9c", "%u002e%u002e%u2215", "．．／", "．．/",
           "..／", "‥/", "..\u2215", "..\u2044", "..\uff3c", ".\u200b./"]
    out: list[str] = []
    for up in ups:
        for depth in (1, 3, 8):
            out.append(up * depth + "outside/secret.png")
        out.append(up * 12 + "etc/passwd")
    out += [str(secret), str(secret).replace("/", "\\"), "/" + str(secret), "//etc/passwd", "/etc/passwd",
            "file://" + str(secret), "file:///etc/passwd", "C:\\Windows\\win.ini", "C:/Windows/win.ini", "C:secret.png",
            "c:\\..\\secret.png", "\\\\server\\share\\secret.png", "//server/share/secret.png",
            "\\\\?\\C:\\secret.png", "\\\\.\\pipe\\x", "\\\\localhost\\c$\\secret.png",
            "/proc/self/environ", "/proc/self/cmdline", "/proc/self/root" + str(secret), "/proc/self/cwd/secret.png",
            "/proc/self/fd/0", "/dev/zero", "/dev/urandom", "/dev/stdin",
            "secret.png\x00.png", "..\x00/outside/secret.png", "a\x00", "\x00", "%00", "secret.png%00.png",
            "x" * 300 + ".png", "a/" * 2100 + "x.png", "x" * 5000, "../" * 1500 + "x.png", "é" * 200 + ".png",
            "link.png", "linkdir/secret.png", "loop/x.png", "loop", "proc/environ", "up/outside/secret.png",
            "~", "~/.ssh/id_rsa", "$HOME/.bashrc", "%USERPROFILE%\\x.png", "secret.png::$DATA", "x.png.", "x.png ",
            " ../outside/secret.png", "\r\n../outside/secret.png", "\u202e../gnp.terces", ".", "..", "./", "/", "\\",
            ".hidden.png", "..png", "...", "....", "%2e", "%2e%2e", "%252e%252e"]
    out += RESERVED + [f"../{r}" for r in RESERVED] + [f"sub/{r}" for r in RESERVED]
    return list(dict.fromkeys(out))


def outside_tree(tmp_path: Path, roots: list[Path]) -> dict[str, int]:
    """Every file, folder and link under tmp_path that is not below one of the roots: path -> size."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d) not in roots]
        for name in dirnames:
            found[str((here / name).relative_to(tmp_path)) + "/"] = -1
        for name in filenames:
            p = here / name
            found[str(p.relative_to(tmp_path))] = p.lstat().st_size
    return found


@pytest.fixture
def planted(tmp_path, settings):
    """The secret outside every root, and links to it planted inside the roots."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(image_bytes(seed=77) + MARKER)
    (outside / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (outside / "evil.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + MARKER)
    out, models = settings.comfyui_output_dir, settings.effective_models_dir
    for root in (out, models, settings.data_dir):
        root.mkdir(parents=True, exist_ok=True)
    (out / "ok.png").write_bytes(image_bytes(seed=5))
    for root in (out, models):
        (root / "link.png").symlink_to(secret)
        (root / "linkdir").symlink_to(outside)
        (root / "loop").symlink_to(root / "loop")
        (root / "proc").symlink_to("/proc/self")
        (root / "up").symlink_to(tmp_path)
    (models / "evil.safetensors").symlink_to(outside / "evil.safetensors")
    (models / "evil-folder").symlink_to(outside)
    return types.SimpleNamespace(secret=secret, outside=outside, payloads=payloads(secret))


def no_secret(body: bytes, what: str) -> None:
    assert MARKER not in body, f"the secret leaked through {what}"
    if body[:2] == b"PK":  # a zip: look inside its members too
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            for info in z.infolist():
                assert ".." not in info.filename.split("/") and not info.filename.startswith("/"), info.filename
                assert MARKER not in z.read(info), f"the secret leaked into {info.filename} through {what}"


async def post_files(client, url: str, files: list[tuple[str, bytes]]) -> aiohttp.ClientResponse:
    """A multipart body written by hand: each name as RFC 5987 `filename*` (any character, NUL
    and CR/LF included, percent-encoded), which aiohttp's FormData refuses to send."""
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
             f"filename*=UTF-8''{quote(name, safe='')}\r\nContent-Type: image/png\r\n\r\n".encode() + content + b"\r\n"
             for name, content in files]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return await client.post(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


class Tally:
    def __init__(self):
        self.requests = 0
        self.server_errors: list[str] = []

    async def check(self, response: aiohttp.ClientResponse, what: str) -> bytes:
        self.requests += 1
        body = await response.read()
        if response.status >= 500:
            self.server_errors.append(f"{what} -> {response.status} {body[:200]!r}")
        no_secret(body, what)
        return body


async def test_traversal_names_never_escape_the_roots(client, settings, planted, tmp_path):
    studio = client.server.app[STUDIO_KEY].get()
    roots = [settings.data_dir, settings.comfyui_output_dir, settings.effective_models_dir,
             settings.effective_loras_dir]  # the secret's own folder is watched too
    names = planted.payloads
    assert len(names) >= 200, len(names)
    tally = Tally()

    p = await make_project(client)
    c = await make_character(client, p["id"], trigger_word="aikotnk")
    files = [(f"{i}.png", noise_png(100 + i), "image/png") for i in range(2)]
    created = (await upload(client, c["id"], *files))["created"]
    for image in created:
        await client.post(f"{V1}/images/{image['id']}/approve")
    job_id = (await (await client.get(f"{V1}/jobs?limit=1")).json())["items"][0]["id"]
    samples = studio.training.jobs_dir / str(job_id) / "samples"
    samples.mkdir(parents=True)
    (samples / "link.png").symlink_to(planted.secret)
    (samples / "ok.png").write_bytes(image_bytes(seed=6))
    linked_job = (await finished(client, await (await client.post(f"{V1}/datasets/reconcile")).json()))["id"]
    other_job = studio.training.jobs_dir / str(linked_job)  # a job whose work folder is a link out
    other_job.parent.mkdir(parents=True, exist_ok=True)
    other_job.symlink_to(tmp_path / "outside")
    (tmp_path / "outside" / "samples").mkdir()
    (tmp_path / "outside" / "samples" / "s.png").write_bytes(image_bytes(seed=8) + MARKER)
    images_dir = studio.layout.images_dir(p["slug"], c["slug"])
    (images_dir / "planted.png").symlink_to(planted.secret)  # a link in the data folder: reconcile must not adopt it

    before = outside_tree(tmp_path, roots)  # after planting: from here on nothing may appear outside the roots

    # the files that may be served are served (the suite would pass vacuously otherwise)
    assert (await client.get(f"{V1}/gallery/file", params={"path": "ok.png"})).status == 200
    assert (await client.get(f"{V1}/jobs/{job_id}/samples/ok.png")).status == 200

    for n, name in enumerate(names + ["link.png", "linkdir/secret.png"]):
        r = await client.get(f"{V1}/gallery/file", params={"path": name})
        await tally.check(r, f"gallery/file?path={name[:60]!r}")
        assert r.status != 200, name[:80]
        for job in (job_id, linked_job) if n % 4 == 0 else (job_id,):
            r = await client.get(f"{V1}/jobs/{job}/samples/{quote(name, safe='')}")
            await tally.check(r, f"samples/{name[:60]!r}")
            assert r.status != 200, name[:80]
    # the raw (unencoded) form of names in the URL path
    for name in names[::3]:
        if "\x00" in name or "\r" in name or "\n" in name or len(name) > 2000:
            continue
        r = await client.get(f"{V1}/jobs/{job_id}/samples/{name}")
        await tally.check(r, f"samples raw {name[:60]!r}")
        assert r.status != 200, name[:80]
    r = await client.get(f"{V1}/jobs/{linked_job}/samples/s.png")
    await tally.check(r, "a sample in a job folder that links out")
    assert r.status == 404

    # import-outputs: one job over every name; nothing outside the output folder is copied in
    with_nul = [n for n in names if "\x00" in n]
    for name in with_nul:  # refused as a whole before any job starts
        r = await client.post(f"{V1}/characters/{c['id']}/import-outputs", json={"paths": [name]})
        await tally.check(r, f"import-outputs {name[:60]!r}")
        assert r.status == 400
    r = await client.post(f"{V1}/characters/{c['id']}/import-outputs",
                          json={"paths": [n for n in names if n not in with_nul]})
    body = await tally.check(r, "import-outputs")
    assert r.status == 202, body[:300]
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded" and job["result"]["created"] == [], job["result"]["created"]
    r = await client.post(f"{V1}/characters/{c['id']}/import-outputs", json={"all": True})  # lists: ok.png only
    job = await finished(client, await tally.check(r, "import all") and await r.json())
    assert len(job["result"]["created"]) == 1, job["result"]

    # upload file names: the image lands in the character's folder whatever its name says
    control = [n for n in names if any(ord(ch) < 32 for ch in n)]
    for name in control:  # a file name with control characters is refused before anything is written
        r = await post_files(client, f"{V1}/characters/{c['id']}/images", [(name, noise_png(999, size=24))])
        await tally.check(r, f"upload {name[:60]!r}")
        assert r.status == 400, name[:80]
    plain = [n for n in names if n not in control][::2]  # every other name: each file costs a record
    for start in range(0, len(plain), 80):
        batch = [(name, noise_png(1000 + start + i, size=24)) for i, name in enumerate(plain[start:start + 80])]
        r = await post_files(client, f"{V1}/characters/{c['id']}/images", batch)
        body = await tally.check(r, f"upload batch {start}")
        if r.status == 400:  # a name in the batch is refused as a whole (control characters): one by one
            for name, content in batch:
                r = await post_files(client, f"{V1}/characters/{c['id']}/images", [(name, content)])
                body = await tally.check(r, f"upload {name[:60]!r}")
                assert r.status in (202, 400), (name[:80], r.status)
                if r.status == 202:
                    assert (await finished(client, await r.json()))["status"] == "succeeded"
            continue
        assert r.status == 202, body[:300]
        assert (await finished(client, await r.json()))["status"] == "succeeded"

    # training base_model: a name from the list only (never a path, never a link out of the folder)
    for name in names + ["evil.safetensors", "evil-folder", "linkdir", "link.png", "up/outside/evil.safetensors"]:
        r = await client.post(f"{V1}/characters/{c['id']}/train", json={"base_model": name})
        body = await tally.check(r, f"train {name[:60]!r}")
        assert 400 <= r.status < 500, (name[:80], r.status, body[:200])
        with pytest.raises(StudioError):
            studio.base_models.resolve(name)

    # export: the class word names the folder inside the zip
    for name in names[::4] + ["person"]:
        r = await client.get(f"{V1}/characters/{c['id']}/export", params={"class": name})
        await tally.check(r, f"export class={name[:60]!r}")
        assert r.status in (200, 400), (name[:80], r.status)
    # reconcile leaves the planted link alone
    r = await client.post(f"{V1}/datasets/reconcile")
    assert (await finished(client, await tally.check(r, "reconcile") and await r.json()))["status"] == "succeeded"

    # every image the studio now has: its file is inside the dataset and is not the secret
    listing = await (await client.get(f"{V1}/characters/{c['id']}/images?status=all&limit=500")).json()
    data_root = studio.layout.root
    for n, image in enumerate(listing["items"]):
        path = (data_root / image["rel_path"]).resolve()
        assert path.is_relative_to(data_root) and not (data_root / image["rel_path"]).is_symlink(), image["rel_path"]
        no_secret(path.read_bytes(), f"the file of image {image['id']}")
        if n % 5 == 0:
            r = await client.get(f"{V1}/images/{image['id']}/file")
            await tally.check(r, f"images/{image['id']}/file")
    assert len(listing["items"]) >= len(plain) * 0.9  # the names were accepted (as names, not paths)

    after = outside_tree(tmp_path, roots)
    assert after == before, f"files appeared outside the roots: {set(after) - set(before)}"
    assert tally.server_errors == [], tally.server_errors[:10]
    print(f"\ntraversal: {len(names)} payloads ({len(plain) + len(control)} as upload names), {tally.requests} "
          "requests, 0 escapes, 0 5xx")


class Images:
    """What a ComfyUI IMAGE batch offers the Save to Dataset node (torch not needed)."""

    def __init__(self, n: int):
        import numpy as np

        rng = np.random.default_rng(3)
        self.items = [self._tensor(rng.random((16, 16, 3))) for _ in range(n)]

    @staticmethod
    def _tensor(array):
        return types.SimpleNamespace(cpu=lambda: types.SimpleNamespace(numpy=lambda: array))

    def __iter__(self):
        return iter(self.items)


async def test_node_inputs_that_name_files(client, settings, planted, tmp_path):
    """The Train LoRA node's base_model and the Save to Dataset node's project/character names,
    called the way ComfyUI calls them (as tests/unit/test_train_node.py does)."""
    import asyncio

    from lora_studio.nodes import bind_studio
    from lora_studio.nodes.dataset import SaveToDataset
    from lora_studio.nodes.training import TrainLoRA

    ref = client.server.app[STUDIO_KEY]
    studio = ref.get()
    roots = [settings.data_dir, settings.comfyui_output_dir, settings.effective_models_dir,
             settings.effective_loras_dir]
    before = outside_tree(tmp_path, roots)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    names = planted.payloads
    label = f"{p['name']} / {c['name']}"
    bind_studio(ref)
    calls = 0
    try:
        def run_nodes():
            nonlocal calls
            for name in names + ["evil.safetensors", "evil-folder", "linkdir"]:
                calls += 1
                with pytest.raises(StudioError):  # a clear error, not a crash
                    TrainLoRA().run(label, name, 2, 4, 1e-4, sample_every=0)
            for name in names:
                for character in (f"{name} / {c['name']}", f"{p['name']} / {name}", name):
                    calls += 1
                    with pytest.raises(StudioError):
                        SaveToDataset().run(Images(1), character, "caption")
            # a hostile caption is text, not a name: it is stored beside the image, inside the dataset
            out = SaveToDataset().run(Images(1), label, "../../outside/x")
            assert "1 image added" in out["ui"]["text"][0]
            for caption in ("nul\x00byte", "lone \ud800 surrogate"):  # PostgreSQL cannot store either
                with pytest.raises(InvalidInput, match="caption"):
                    SaveToDataset().run(Images(1), label, caption)

        await asyncio.get_running_loop().run_in_executor(None, run_nodes)
    finally:
        bind_studio(None)
    assert studio.jobs.list(kind="train").items == []
    after = outside_tree(tmp_path, roots)
    assert after == before, f"files appeared outside the roots: {set(after) - set(before)}"
    items = (await (await client.get(f"{V1}/characters/{c['id']}/images")).json())["items"]
    assert len(items) == 1
    print(f"\nnode traversal: {calls} node calls, 0 escapes")
    await assert_error(await client.get(f"{V1}/gallery/file", params={"path": "link.png"}), 400)


async def test_resume_never_loads_a_checkpoint_from_outside_the_jobs_folder(client, settings, tmp_path):
    """A job folder, a checkpoints folder or a step folder planted as a link out of the jobs folder is never
    handed to a worker as the checkpoint to resume from; the real one inside is."""
    from lora_studio.core.jobs import Job

    studio = client.server.app[STUDIO_KEY].get()
    jobs = studio.training.jobs_dir
    outside = tmp_path / "outside-checkpoints"
    (outside / "checkpoints" / "step-2").mkdir(parents=True)
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "901").symlink_to(outside)  # the whole job folder
    (jobs / "902").mkdir()
    (jobs / "902" / "checkpoints").symlink_to(outside / "checkpoints")  # its checkpoints folder
    (jobs / "903" / "checkpoints").mkdir(parents=True)
    (jobs / "903" / "checkpoints" / "step-4").symlink_to(outside / "checkpoints" / "step-2")  # one step folder
    (jobs / "903" / "checkpoints" / "step-2").mkdir()  # and a real one beside it
    (jobs / "904" / "checkpoints").mkdir(parents=True)
    (jobs / "904" / "checkpoints" / "loop").symlink_to(jobs / "904" / "checkpoints" / "loop")
    reported = {"checkpoint": {"path": str(outside / "checkpoints" / "step-2")}}
    last = studio.training.last_checkpoint

    def job(job_id: int, result: dict, payload: dict) -> Job:
        return Job(id=job_id, kind="train", status="failed", progress=0.0, message=None, error=None, payload=payload,
                   result=result, character_id=None, cancel_requested=False, created_at="", started_at=None,
                   finished_at=None, updated_at="")

    assert last(job(901, {}, {})) is None
    assert last(job(902, reported, {})) is None
    assert last(job(903, reported, {})) == (jobs / "903" / "checkpoints" / "step-2").resolve()
    assert last(job(904, {}, {"resume_from": str(outside / "checkpoints" / "step-2")})) is None
