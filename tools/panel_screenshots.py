"""Take docs/panel-compact.png and docs/panel-workspace.png: start the standalone studio on a temporary data
folder, seed the demo project of tools/screenshot.py (drawn portraits, a few decided) and a few more
rejections, and screenshot with headless chromium (Debian's /usr/bin/chromium, driven by Playwright), in
ComfyUI's dark palette:

  - the compact panel at ComfyUI's default sidebar width (360 × 800): the review queue, the current card;
  - the wide workspace (1280 × 800): thumbnails, the current image large, its rejection reasons toggled by
    keys, the SSOT prompt, the effective negative prompt and the top rejection reasons.

    python tools/panel_screenshots.py [--out docs]

With --comfyui URL (a running ComfyUI with the pack in custom_nodes/; an empty studio there gets the same demo
project) it takes the same two views inside that ComfyUI instead, at its own default sidebar width in a
1440 × 900 window: docs/panel-compact-comfyui.png and docs/panel-workspace-comfyui.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot import CHROMIUM, CHROMIUM_ARGS, ROOT, call, seed, studio_server  # noqa: E402


def more_history(api: str) -> None:
    """Rejections with categories and a note, so the reasons and the learned terms have something to show."""
    aiko = next(c for c in call(api, "GET", "/characters")["items"] if c["name"] == "Aiko")
    pending = call(api, "GET", f"/characters/{aiko['id']}/images?status=pending&limit=50")["items"]
    call(api, "POST", f"/images/{pending[-1]['id']}/reject", {"categories": ["wrong_style", "bad_quality"]})
    call(api, "POST", f"/images/{pending[-2]['id']}/reject", {"categories": ["wrong_style"], "note": "too painterly"})


def wait_images(page, scope: str) -> None:
    page.wait_for_function(f"""() => [...document.querySelectorAll('{scope} img')]
                                 .filter((i) => i.getBoundingClientRect().top < innerHeight)  // lazy ones wait
                                 .every((i) => i.complete && i.naturalWidth > 0)""")


def in_comfyui(url: str, out: Path) -> int:
    """The sidebar tab and the workspace inside a real ComfyUI (its frontend, its sidebar, its canvas)."""
    from playwright.sync_api import sync_playwright

    api = url.rstrip("/") + "/lora-studio/v1"
    if not any(p["name"] == "Starlight Academy" for p in call(api, "GET", "/projects")["items"]):
        seed(api)
        more_history(api)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme="dark")
        page.goto(url)
        page.locator(".lora-studio-tab-button").wait_for(timeout=60_000)
        for _ in range(3):  # ComfyUI's first-run dialogs (templates, …)
            page.wait_for_timeout(800)
            if page.locator(".p-dialog-mask").count():
                page.keyboard.press("Escape")
        page.locator(".lora-studio-tab-button").click()
        panel = page.get_by_test_id("lora-studio-panel")
        panel.wait_for()
        page.get_by_test_id("project-select").select_option(label="Starlight Academy")
        page.locator('[data-testid^="pending-card-"]').first.wait_for()
        page.locator('[data-testid="ssot-box"] summary').click()  # fold the SSOT prompt: the queue in sight
        wait_images(page, '[data-testid="pending-grid"]')
        page.get_by_test_id("pending-grid").focus()
        page.keyboard.press("ArrowRight")
        page.evaluate("() => document.querySelector('.ls-body').scrollTo(0, 0)")
        page.mouse.move(700, 450)
        page.screenshot(path=str(out / "panel-compact-comfyui.png"))
        page.locator('[data-testid="ssot-box"] summary').click()
        page.keyboard.press("w")
        page.get_by_test_id("workspace").wait_for()
        page.keyboard.press("2")
        wait_images(page, '[data-testid="workspace"] [data-testid="review-preview"]')
        page.mouse.move(700, 450)
        page.screenshot(path=str(out / "panel-workspace-comfyui.png"))
        page.keyboard.press("Escape")
        browser.close()
    print(f"wrote {out / 'panel-compact-comfyui.png'} and {out / 'panel-workspace-comfyui.png'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--comfyui", metavar="URL", help="take the screenshots in this running ComfyUI")
    args = parser.parse_args()
    if args.comfyui:
        return in_comfyui(args.comfyui, args.out)
    from playwright.sync_api import sync_playwright

    with studio_server() as base:
        api = base + "/lora-studio/v1"
        seed(api)
        more_history(api)
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 360, "height": 800}, color_scheme="dark")
            page.goto(base + "/")
            page.get_by_test_id("tab-approvals").click()
            page.locator('[data-testid^="pending-card-"]').first.wait_for()
            page.locator("summary").first.click()  # fold the SSOT prompt: the queue in sight
            wait_images(page, '[data-testid="pending-grid"]')
            page.get_by_test_id("pending-grid").focus()
            page.keyboard.press("ArrowRight")
            page.evaluate("() => document.querySelector('.ls-body').scrollTo(0, 0)")
            page.mouse.move(0, 0)
            page.screenshot(path=str(args.out / "panel-compact.png"))

            page.set_viewport_size({"width": 1280, "height": 800})
            page.locator("summary").first.click()  # unfold it again for the workspace
            page.keyboard.press("w")
            ws = page.get_by_test_id("workspace")
            ws.wait_for()
            wait_images(page, '[data-testid="workspace"] [data-testid="pending-grid"]')
            page.keyboard.press("ArrowRight")
            page.keyboard.press("2")
            page.keyboard.press("4")
            wait_images(page, '[data-testid="workspace"] [data-testid="review-preview"]')
            page.mouse.move(0, 0)
            page.screenshot(path=str(args.out / "panel-workspace.png"))
            browser.close()
    print(f"wrote {args.out / 'panel-compact.png'} and {args.out / 'panel-workspace.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
