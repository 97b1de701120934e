"""For the node tests: a studio on SQLite bound to the nodes, stand-ins of the ComfyUI runtime modules a node
imports inside its functions (built like ComfyUI's own, recording what they are given), and LoRA records with
files, as a training leaves them."""

from __future__ import annotations

import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


class Ref:
    def __init__(self, studio):
        self.studio = studio

    def get(self):
        return self.studio

    def ready(self) -> bool:
        return True


def make_studio(tmp_path: Path, *, start_jobs: bool = False):
    """A Studio on a SQLite file in tmp_path, bound to the nodes (close it and bind None after)."""
    from lora_studio.app import EventHub, standalone_host
    from lora_studio.core.settings import load_settings
    from lora_studio.nodes import bind_studio
    from lora_studio.studio import Studio

    settings = load_settings(cli={"data_dir": tmp_path / "data", "models_dir": tmp_path / "models",
                                  "loras_dir": tmp_path / "loras", "min_approved_images": 2,
                                  "comfyui_url": "http://127.0.0.1:9"}, env={})
    settings.effective_models_dir.mkdir(parents=True)
    settings.effective_loras_dir.mkdir(parents=True)
    s = Studio(settings, standalone_host(settings, EventHub()))
    if start_jobs:
        s.jobs.start()
    bind_studio(Ref(s))
    return s


def ksampler_lists() -> tuple[list[str], list[str]]:
    """KSampler's sampler_name and scheduler choices in the recorded ComfyUI 0.3.64."""
    info = json.loads((FIXTURES / "object_info.json").read_text(encoding="utf-8"))["KSampler"]["input"]["required"]
    return list(info["sampler_name"][0]), list(info["scheduler"][0])


def validate_node_input(received_type, input_type, strict=False) -> bool:
    """ComfyUI's /prompt link type check, as it is in comfy_execution/validation.py (0.3.64, commit a125cd8)."""
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received_types = set(t.strip() for t in received_type.split(","))
    input_types = set(t.strip() for t in input_type.split(","))
    if strict:
        return received_types.issubset(input_types)
    return len(received_types.intersection(input_types)) > 0


def frontend_type(type_) -> str:
    """The slot type ComfyUI's frontend gives an output or input (schemas/nodeDef/migration.ts: a list is COMBO)."""
    return "COMBO" if isinstance(type_, list) else type_


def node_info(node_class: str, cls) -> dict:
    """A node's /object_info entry as ComfyUI's server.py (node_info) builds it for a V1 node, through JSON."""
    info = {"input": cls.INPUT_TYPES(), "input_order": {k: list(v) for k, v in cls.INPUT_TYPES().items()},
            "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), "name": node_class,
            "display_name": node_class, "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": "custom_nodes.lora-studio", "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True}
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    return json.loads(json.dumps(info))


class ExecutionBlocker:
    """comfy_execution/graph_utils.py's class, as it is."""

    def __init__(self, message):
        self.message = message


def comfy_runtime(monkeypatch) -> types.SimpleNamespace:
    """`comfy.utils` (load_torch_file, ProgressBar), `comfy.sd` (load_lora_for_models), `comfy.samplers`
    (KSampler's lists) and `comfy_execution.graph_utils` (ExecutionBlocker) in sys.modules. `calls` records
    (function, arguments); load_lora_for_models answers new stand-in objects naming what was applied."""
    calls: list[tuple] = []
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    utils = types.ModuleType("comfy.utils")

    def load_torch_file(path, safe_load=False):
        calls.append(("load_torch_file", path, safe_load))
        return {"file": Path(path).name}

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.node_id = total, node_id

        def update_absolute(self, value, total=None, preview=None):
            calls.append(("progress", value, total, preview is not None))

    utils.load_torch_file, utils.ProgressBar = load_torch_file, ProgressBar
    sd = types.ModuleType("comfy.sd")

    def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
        calls.append(("load_lora_for_models", model, clip, lora, strength_model, strength_clip))
        return (("patched", model, lora["file"], strength_model), ("patched", clip, lora["file"], strength_clip))

    sd.load_lora_for_models = load_lora_for_models
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = type("KSampler", (), {})
    samplers.KSampler.SAMPLERS, samplers.KSampler.SCHEDULERS = ksampler_lists()
    comfy.utils, comfy.sd, comfy.samplers = utils, sd, samplers
    execution = types.ModuleType("comfy_execution")
    execution.__path__ = []
    graph_utils = types.ModuleType("comfy_execution.graph_utils")
    graph_utils.ExecutionBlocker = ExecutionBlocker
    execution.graph_utils = graph_utils
    for name, module in {"comfy": comfy, "comfy.utils": utils, "comfy.sd": sd, "comfy.samplers": samplers,
                         "comfy_execution": execution, "comfy_execution.graph_utils": graph_utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(calls=calls, samplers=samplers, ExecutionBlocker=ExecutionBlocker)


def write_safetensors(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid one-tensor .safetensors file with this `__metadata__`."""
    header = {"__metadata__": metadata or {}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + struct.pack("<f", 1.0))
    return path


def give_lora(s, character_id: int, file_name: str, *, job_id: int | None = None,
              metadata: dict[str, str] | None = None, write_file: bool = True) -> int:
    """A LoRA record made the character's current LoRA (what a succeeded training records), with its file."""
    import sqlalchemy as sa
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import characters, lora_models

    if write_file:
        s.host.loras_dir.mkdir(parents=True, exist_ok=True)
        write_safetensors(s.host.loras_dir / file_name, metadata)
    with s.db.begin() as conn:
        lora_id = conn.execute(lora_models.insert().values(
            character_id=character_id, job_id=job_id, file_name=file_name, base_model="base", rank=4, alpha=2.0,
            steps=10, learning_rate=1e-4, sha256="0" * 64, image_count=2, created_at=utcnow())).inserted_primary_key[0]
        conn.execute(sa.update(characters).where(characters.c.id == character_id).values(current_lora_id=lora_id))
    return lora_id


def succeeded_training(s, character_id: int, payload: dict[str, Any], result: dict[str, Any]) -> int:
    """A train job row as a finished training leaves it (payload: the resolved request; result: its record)."""
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import jobs

    now = utcnow()
    with s.db.begin() as conn:
        return conn.execute(jobs.insert().values(
            kind="train", status="succeeded", progress=1.0, message="done", payload=payload, result=result,
            character_id=character_id, cancel_requested=False, created_at=now, started_at=now, finished_at=now,
            updated_at=now)).inserted_primary_key[0]
