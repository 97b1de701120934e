"""The pack loads inside ComfyUI as ComfyUI loads it: from a folder with a hyphenated name, as a
package named after its path, cheaply (no heavy imports), registering nodes, routes and web files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parents[1] / "support" / "comfyui_standin.py"
SKIP = shutil.ignore_patterns(".venv", ".git", "tests", "docs", "__pycache__", "*.egg-info", ".ruff_cache",
                              ".pytest_cache", "lora_studio_data", "benchmarks")


def copy_pack(dest: Path) -> Path:
    shutil.copytree(REPO, dest, ignore=SKIP)
    return dest


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy")
    pack = copy_pack(tmp / "ComfyUI" / "custom_nodes" / "lora-studio-pack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_STUDIO_")}
    out = subprocess.run([sys.executable, str(STANDIN), str(pack), str(tmp / "ComfyUI")], capture_output=True,
                         text=True, timeout=120, env=env, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_imports_nothing_heavy_and_no_second_copy(report):
    assert report["heavy_after_load"] == []
    assert report["heavy_after_use"] == []  # prompts, uploads and node runs need no torch either
    assert report["lora_studio_imported"] is False  # only relative imports: one copy of each module


def test_database_code_waits_for_the_server_to_start(report):
    # ComfyUI imports SQLAlchemy right after loading custom nodes; importing it from a thread of
    # ours at the same time left it half-initialised in a real ComfyUI. The studio opens on startup.
    assert report["sqlalchemy_before_server_start"] is False
    assert report["health"]["status"] == "ok"


def test_nodes_web_and_routes_are_registered(report):
    assert report["node_classes"] == ["LoraStudioCharacterPrompt", "LoraStudioLoadCharacterLoRA",
                                      "LoraStudioSaveToDataset", "LoraStudioTrainLoRA"]
    assert all(name.endswith("(LoRA Studio)") for name in report["display_names"].values())
    assert report["web_directory"] == "./web/comfyui" and "lora_studio.js" in report["web_files"]
    assert "lora_studio_nodes.js" in report["web_files"]  # what the nodes report, drawn on the canvas
    assert "/lora-studio/v1/health" in report["paths"] and "/lora-studio/v1/characters/{character_id}/images" in report["paths"]
    assert report["health"]["host"] == "comfyui"


def test_nodes_use_the_same_services(report):
    nodes = report["nodes"]
    assert nodes["combo_characters"] == ["Moon / Aiko"]  # project and character together
    assert nodes["positive"] == "masterpiece, best quality, highly detailed, 1girl, silver hair"
    assert nodes["negative"] == "worst quality, low quality, blurry, deformed"
    assert nodes["lora"] is None  # no LoRA yet, and no executor whose nodes it would stop
    assert nodes["settings"] == ["dpmpp_2m", "karras", 25, 7.0, 768, 768, 0]  # the default style, seed 0
    assert nodes["passthrough"] is True and nodes["saved_text"] == ["2 images added to Aiko's pending queue"]
    assert report["pending"] == [{"source": "comfyui", "caption": "a caption", "has_prompt": True}] * 2
    # Train LoRA goes through the same gates as the API: no approved images yet
    assert "0 approved image(s)" in nodes["train_error"] and "Traceback" not in nodes["train_error"]
