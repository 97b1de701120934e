"""Inside ComfyUI (stand-ins, routes served as ComfyUI serves them): our routes refuse DNS-rebinding
hosts and non-JSON bodies and answer JSON 404/405, under both `/lora-studio/v1` and ComfyUI's
`/api/lora-studio/v1` alias; ComfyUI's own routes behave as before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tests" / "support" / "comfyui_perimeter.py"
SKIP = shutil.ignore_patterns(".venv", ".git", "tests", "docs", "__pycache__", "*.egg-info", ".ruff_cache",
                              ".pytest_cache", "lora_studio_data", "benchmarks")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy")
    pack = tmp / "ComfyUI" / "custom_nodes" / "lora-studio-pack"
    shutil.copytree(REPO, pack, ignore=SKIP)  # as test_comfyui_load.py: the folder ComfyUI would load
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_STUDIO_")}
    env["LORA_STUDIO_ALLOWED_HOSTS"] = "studio.lan"  # read when the studio starts, as inside ComfyUI
    out = subprocess.run([sys.executable, str(RUNNER), str(pack), str(tmp / "ComfyUI")], capture_output=True,
                         text=True, timeout=120, env=env, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def error_code(answer: dict) -> str | None:
    return (answer["json"] or {}).get("error", {}).get("code")


@pytest.mark.parametrize("prefix", ["lora-studio", "api"])
def test_our_routes_have_the_perimeter_under_both_prefixes(report, prefix):
    assert report[f"{prefix}_health"]["status"] == 200
    assert report[f"{prefix}_configured_host"]["status"] == 200  # LORA_STUDIO_ALLOWED_HOSTS inside ComfyUI
    for case in ("rebind_read", "rebind_write", "unknown_rebind"):
        answer = report[f"{prefix}_{case}"]
        assert (answer["status"], error_code(answer)) == (403, "forbidden_host"), case
        assert "LORA_STUDIO_ALLOWED_HOSTS" in answer["json"]["error"]["message"]
    assert (report[f"{prefix}_text_body"]["status"], error_code(report[f"{prefix}_text_body"])) == (
        415, "unsupported_media_type")
    assert (report[f"{prefix}_unknown"]["status"], error_code(report[f"{prefix}_unknown"])) == (404, "not_found")
    wrong = report[f"{prefix}_wrong_method"]
    assert (wrong["status"], error_code(wrong)) == (405, "method_not_allowed")
    assert set(wrong["allow"].split(", ")) - {"HEAD"} == {"GET", "POST"}  # aiohttp may add HEAD to a GET route
    assert report["projects"] == []  # neither the rebinding nor the text/plain request created a project


def test_comfyuis_own_routes_are_untouched(report):
    assert report["comfy_rebind"]["status"] == 200  # ComfyUI's routes: ComfyUI's business
    assert report["comfy_static"]["status"] == 200
    assert report["comfy_wrong_method"]["status"] == 405 and report["comfy_wrong_method"]["json"] is None
    assert report["comfy_unknown"]["status"] == 404 and report["comfy_unknown"]["json"] is None
