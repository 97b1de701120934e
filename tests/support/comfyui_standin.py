"""Run as a script: load a copy of the pack the way ComfyUI does, with minimal stand-ins for
ComfyUI's `server` and `folder_paths` (built from what ComfyUI exposes), and print a JSON report.

usage: python comfyui_standin.py <pack folder> <comfyui root for folders>
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

HEAVY = ("torch", "diffusers", "peft", "transformers", "yt_dlp")


def install_standins(root: Path) -> list:
    sent: list = []
    server = types.ModuleType("server")

    class PromptServer:
        instance = None

        def __init__(self):
            self.app = web.Application()  # ComfyUI builds its app before it loads custom nodes
            self.routes = web.RouteTableDef()
            self.address, self.port = "0.0.0.0", 8188

        def send_sync(self, event, data, sid=None):
            sent.append((event, data, sid))

    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer
    folders = {"checkpoints": root / "models/checkpoints", "loras": root / "models/loras",
               "diffusers": root / "models/diffusers"}
    for p in folders.values():
        p.mkdir(parents=True, exist_ok=True)
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(root / "models")
    fp.get_folder_paths = lambda kind: [str(folders[kind])]
    fp.get_filename_list = lambda kind: sorted(p.name for p in folders[kind].iterdir() if p.is_file())
    fp.get_output_directory = lambda: str(root / "output")
    fp.get_user_directory = lambda: str(root / "user")
    sys.modules["server"], sys.modules["folder_paths"] = server, fp
    return sent


def load_like_comfyui(folder: Path):
    name = str(folder).replace(".", "_x_")  # ComfyUI's module name for a folder: its path
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    started = time.perf_counter()
    spec.loader.exec_module(module)
    return module, time.perf_counter() - started


class FakeImage:
    """What a node receives for one IMAGE (ComfyUI passes torch tensors; only .cpu().numpy() is used)."""

    def __init__(self, array):
        self.array = array

    def cpu(self):
        return self

    def numpy(self):
        return self.array


async def exercise(module, sent) -> dict:
    from server import PromptServer

    app = PromptServer.instance.app  # starting it runs the pack's on_startup hook, as in ComfyUI
    app.add_routes(PromptServer.instance.routes)
    paths = sorted({r.path for r in PromptServer.instance.routes if isinstance(r, web.RouteDef)})
    async with TestClient(TestServer(app)) as client:
        health = await (await client.get("/lora-studio/v1/health")).json()
        p = await (await client.post("/lora-studio/v1/projects", json={"name": "Moon"})).json()
        c = await (await client.post(f"/lora-studio/v1/projects/{p['id']}/characters",
                                     json={"name": "Aiko", "design_prompt": "1girl, silver hair"})).json()

        def run_nodes():
            import numpy as np

            nodes = module.NODE_CLASS_MAPPINGS
            prompt_node = nodes["LoraStudioCharacterPrompt"]
            inputs = prompt_node.INPUT_TYPES()["required"]
            positive, negative, lora, *settings = prompt_node().run("Moon / Aiko")
            rng = np.random.default_rng(0)  # two unrelated pictures (not near duplicates of each other)
            batch = [FakeImage(rng.random((32, 32, 3), dtype=np.float32)) for _ in range(2)]
            saved = nodes["LoraStudioSaveToDataset"]().run(batch, "Moon / Aiko", "a caption",
                                                           prompt={"1": {"class_type": "X"}})
            try:
                nodes["LoraStudioTrainLoRA"]().run("Moon / Aiko", "no-such-model", 2, 4, 1e-4)
                train_error = None
            except Exception as e:  # ComfyUI shows a node's exception to the user
                train_error = f"{type(e).__name__}: {e}"
            return {"train_error": train_error, "combo_characters": inputs["character"][0],
                    "positive": positive, "negative": negative, "lora": lora, "settings": settings,
                    "saved_text": saved["ui"]["text"], "passthrough": saved["result"][0] is batch}

        node_results = await asyncio.get_running_loop().run_in_executor(None, run_nodes)
        pending = await (await client.get(f"/lora-studio/v1/characters/{c['id']}/images")).json()
    return {"paths": paths, "health": health, "nodes": node_results,
            "pending": [{"source": i["source"], "caption": i["caption"], "has_prompt": "prompt" in i["metadata"]}
                        for i in pending["items"]],
            "events": sorted({e for e, _, _ in sent})}


def main() -> None:
    folder, root = Path(sys.argv[1]), Path(sys.argv[2])
    sent = install_standins(root)
    module, seconds = load_like_comfyui(folder)
    time.sleep(0.5)  # a background thread started at load would have imported by now
    report = {
        "sqlalchemy_before_server_start": "sqlalchemy" in sys.modules,
        "load_seconds": seconds,
        "heavy_after_load": [m for m in HEAVY if m in sys.modules],
        "lora_studio_imported": "lora_studio" in sys.modules,
        "node_classes": sorted(module.NODE_CLASS_MAPPINGS),
        "display_names": module.NODE_DISPLAY_NAME_MAPPINGS,
        "web_directory": module.WEB_DIRECTORY,
        "web_files": sorted(p.name for p in (folder / module.WEB_DIRECTORY).glob("*.js")),
    }
    report.update(asyncio.run(exercise(module, sent)))
    report["heavy_after_use"] = [m for m in HEAVY if m in sys.modules]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
