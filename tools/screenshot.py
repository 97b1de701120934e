"""Take docs/panel.png: start the standalone studio on a temporary data folder, seed a project, a
character and a few drawn images through the HTTP API, and screenshot the Approvals tab (1280×800)
with headless chromium (Debian's /usr/bin/chromium, driven by Playwright): two cards selected and
the batch rejection form open.

    python tools/screenshot.py [--out docs/panel.png]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(api: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def upload(api: str, character_id: int, files: dict[str, bytes], caption: str) -> dict:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + content + b"\r\n" for name, content in files.items())
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\n{caption}\r\n--{boundary}--\r\n'.encode()
    req = urllib.request.Request(f"{api}/characters/{character_id}/images", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        job = json.loads(r.read())
    deadline = time.monotonic() + 60  # uploads are a job: wait for it and return its result
    while job["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"upload job {job['id']} did not finish: {job}")
        time.sleep(0.2)
        with urllib.request.urlopen(f"{api}/jobs/{job['id']}", timeout=30) as r:
            job = json.loads(r.read())
    if job["status"] != "succeeded":
        raise RuntimeError(f"upload job {job['id']} {job['status']}: {job.get('error')}")
    return job["result"]


def portrait(hair: tuple[int, int, int], eyes: tuple[int, int, int], bg: tuple[int, int, int], tilt: float,
             size: int = 384) -> bytes:
    """A simple drawn anime-style bust, so the screenshot has something to review."""
    s = size
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    for y in range(s):  # vertical gradient background
        k = y / s
        d.line([(0, y), (s, y)], fill=tuple(int(c * (1 - 0.35 * k) + 255 * 0.1 * k) for c in bg))
    cx = s // 2 + int(tilt * s * 0.05)
    skin, dark = (250, 224, 206), tuple(max(0, c - 60) for c in hair)
    d.ellipse((cx - s * .36, s * .10, cx + s * .36, s * .80), fill=hair)  # back hair
    d.rounded_rectangle((cx - s * .30, s * .78, cx + s * .30, s * 1.1), radius=int(s * .12), fill=(60, 70, 110))
    d.rectangle((cx - s * .06, s * .62, cx + s * .06, s * .8), fill=skin)  # neck
    d.ellipse((cx - s * .22, s * .22, cx + s * .22, s * .70), fill=skin)  # face
    d.pieslice((cx - s * .27, s * .12, cx + s * .27, s * .58), 180, 360, fill=hair)  # bangs
    for i in range(-2, 3):
        x = cx + i * s * .09
        d.polygon([(x - s * .07, s * .34), (x + s * .07, s * .34), (x + s * .01, s * .47)], fill=hair)
    for side in (-1, 1):  # eyes
        ex = cx + side * s * .095
        d.ellipse((ex - s * .05, s * .44, ex + s * .05, s * .56), fill="white")
        d.ellipse((ex - s * .035, s * .45, ex + s * .035, s * .56), fill=eyes)
        d.ellipse((ex - s * .012, s * .465, ex + s * .018, s * .495), fill="white")
        d.arc((ex - s * .06, s * .42, ex + s * .06, s * .52), 200, 340, fill=dark, width=3)
    d.arc((cx - s * .04, s * .58, cx + s * .04, s * .63), 20, 160, fill=(190, 90, 90), width=3)  # mouth
    for side in (-1, 1):  # blush
        bx = cx + side * s * .14
        d.ellipse((bx - s * .035, s * .55, bx + s * .035, s * .58), fill=(246, 180, 180))
    img = img.filter(ImageFilter.SMOOTH)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def seed(api: str) -> None:
    project = call(api, "POST", "/projects", {"name": "Starlight Academy", "description": "demo"})
    aiko = call(api, "POST", f"/projects/{project['id']}/characters", {
        "name": "Aiko", "trigger_word": "aiko_sa",
        "design_prompt": "1girl, long pink hair, blunt bangs, violet eyes, school uniform, red ribbon"})
    call(api, "POST", f"/projects/{project['id']}/characters", {
        "name": "Ren", "design_prompt": "1boy, short teal hair, amber eyes, blazer"})
    looks = [((236, 120, 170), (120, 70, 200), (90, 110, 170)), ((240, 130, 180), (110, 60, 190), (70, 140, 130)),
             ((226, 110, 160), (130, 80, 210), (160, 120, 90)), ((90, 170, 200), (200, 140, 40), (120, 90, 150)),
             ((238, 125, 175), (115, 65, 195), (100, 100, 120)), ((245, 140, 185), (125, 70, 205), (170, 90, 110)),
             ((232, 118, 168), (118, 66, 198), (60, 90, 140)), ((70, 60, 60), (60, 120, 200), (140, 150, 100)),
             ((236, 122, 172), (122, 72, 202), (110, 130, 170)), ((240, 128, 176), (112, 64, 196), (150, 110, 160))]
    files = {f"aiko_{i:02d}.png": portrait(h, e, b, math.sin(i)) for i, (h, e, b) in enumerate(looks)}
    created = upload(api, aiko["id"], files, caption="aiko, school uniform, upper body")["created"]
    for image in created[:3]:  # some history, so the counts and learned terms are not empty
        call(api, "POST", f"/images/{image['id']}/approve")
    call(api, "POST", f"/images/{created[3]['id']}/reject", {"categories": ["wrong_appearance"], "note": "teal hair"})


@contextlib.contextmanager
def studio_server() -> Iterator[str]:
    """A standalone studio on a temporary data folder (its own ComfyUI output folder, no Vault, no ComfyUI):
    yields its base URL once /health answers; stops it after."""
    with tempfile.TemporaryDirectory(prefix="lora-studio-shot-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_STUDIO_", "VAULT_")) and k != "COMFYUI_URL"}
        env["LORA_STUDIO_NEAR_DUPLICATE_DISTANCE"] = "0"  # the drawn portraits are alike on purpose
        (Path(tmp) / "out").mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "lora_studio", "serve", "--data", f"{tmp}/data", "--port",
                                 str(port), "--comfyui-output", f"{tmp}/out"], cwd=tmp, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/lora-studio/v1/health", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the studio server did not start") from None
                    time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "panel.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with studio_server() as base:
        seed(base + "/lora-studio/v1")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/")
            page.get_by_test_id("tab-approvals").click()
            cards = page.locator('[data-testid^="pending-card-"]')
            cards.first.wait_for()
            page.wait_for_function("[...document.querySelectorAll('[data-testid^=pending-img-]')]"
                                   ".every((i) => i.complete && i.naturalWidth > 0)")
            # select two cards and open the batch rejection form
            for i in (1, 2):
                page.get_by_test_id(f"select-{cards.nth(i).get_attribute('data-image-id')}").check()
            page.get_by_test_id("batch-reject").click()
            page.get_by_test_id("batch-cat-wrong_style").check()
            page.mouse.move(0, 0)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
