"""Load Character LoRA against stand-ins of ComfyUI's `comfy.utils.load_torch_file` and
`comfy.sd.load_lora_for_models` (the calls LoraLoader makes; the real application is checked in a real ComfyUI,
see the report of issue 11): which file, which strengths, pass-through without a LoRA, reloading when it changes."""

from __future__ import annotations

import pytest
from lora_studio.core.errors import NotFound
from support.node_studio import comfy_runtime, give_lora, make_studio

LABEL = "Moon / Aiko"


@pytest.fixture
def studio(tmp_path):
    from lora_studio.nodes import bind_studio

    s = make_studio(tmp_path)
    project = s.projects.create("Moon")
    s.aiko = s.characters.create(project.id, "Aiko")
    yield s
    bind_studio(None)
    s.close()


def test_inputs_and_outputs():
    from lora_studio.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from lora_studio.nodes.lora import LoadCharacterLoRA

    assert NODE_CLASS_MAPPINGS["LoraStudioLoadCharacterLoRA"] is LoadCharacterLoRA
    assert NODE_DISPLAY_NAME_MAPPINGS["LoraStudioLoadCharacterLoRA"] == "Load Character LoRA (LoRA Studio)"
    required = LoadCharacterLoRA.INPUT_TYPES()["required"]
    assert list(required) == ["model", "clip", "character", "strength_model", "strength_clip"]
    assert required["model"][0] == "MODEL" and required["clip"][0] == "CLIP"
    assert required["strength_model"] == ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                                    "tooltip": "how strongly to modify the diffusion model"})
    assert LoadCharacterLoRA.RETURN_TYPES == ("MODEL", "CLIP") and LoadCharacterLoRA.FUNCTION == "load"


def test_applies_the_current_lora_with_comfyuis_loader(studio, monkeypatch):
    from lora_studio.nodes.lora import LoadCharacterLoRA

    runtime = comfy_runtime(monkeypatch)
    give_lora(studio, studio.aiko.id, "moon-aiko-v1.safetensors")
    node = LoadCharacterLoRA()
    out = node.load("MODEL-0", "CLIP-0", LABEL, 0.8, 0.6)
    path = str((studio.host.loras_dir / "moon-aiko-v1.safetensors").resolve())
    assert runtime.calls == [("load_torch_file", path, True),
                             ("load_lora_for_models", "MODEL-0", "CLIP-0", {"file": "moon-aiko-v1.safetensors"},
                              0.8, 0.6)]
    assert out["result"] == (("patched", "MODEL-0", "moon-aiko-v1.safetensors", 0.8),
                             ("patched", "CLIP-0", "moon-aiko-v1.safetensors", 0.6))
    assert out["ui"] == {"text": ["moon-aiko-v1.safetensors (model 0.8, clip 0.6)"]}
    node.load("MODEL-1", "CLIP-1", LABEL, 1.0, 1.0)  # the same file: its tensors are reused, as LoraLoader does
    assert [c[0] for c in runtime.calls] == ["load_torch_file", "load_lora_for_models", "load_lora_for_models"]
    give_lora(studio, studio.aiko.id, "moon-aiko-v2.safetensors")  # a new training: the new file
    assert node.load("M", "C", LABEL, 1.0, 1.0)["result"][0] == ("patched", "M", "moon-aiko-v2.safetensors", 1.0)
    assert runtime.calls[-2][0] == "load_torch_file" and runtime.calls[-2][1].endswith("moon-aiko-v2.safetensors")


def test_without_a_lora_model_and_clip_pass_through_and_the_node_says_so(studio, monkeypatch):
    from lora_studio.nodes.lora import LoadCharacterLoRA

    runtime = comfy_runtime(monkeypatch)
    model, clip = object(), object()
    out = LoadCharacterLoRA().load(model, clip, LABEL, 1.0, 1.0)
    assert out["result"][0] is model and out["result"][1] is clip
    assert out["ui"] == {"text": ["Aiko has no LoRA yet: model and CLIP pass through unchanged"]}
    give_lora(studio, studio.aiko.id, "moon-aiko-v1.safetensors")
    zero = LoadCharacterLoRA().load(model, clip, LABEL, 0.0, 0.0)
    assert zero["result"][0] is model and "strength 0" in zero["ui"]["text"][0]
    assert runtime.calls == []


def test_a_missing_file_or_character_is_a_clear_error(studio, monkeypatch):
    from lora_studio.nodes.lora import LoadCharacterLoRA

    comfy_runtime(monkeypatch)
    give_lora(studio, studio.aiko.id, "moon-aiko-v1.safetensors", write_file=False)
    with pytest.raises(NotFound, match="Aiko's LoRA moon-aiko-v1.safetensors is not in the loras folder"):
        LoadCharacterLoRA().load("M", "C", LABEL, 1.0, 1.0)
    with pytest.raises(NotFound, match="no character 'Moon / Mio'"):
        LoadCharacterLoRA().load("M", "C", "Moon / Mio", 1.0, 1.0)


def test_is_changed_follows_the_characters_lora(studio):
    from lora_studio.nodes.lora import LoadCharacterLoRA

    none = LoadCharacterLoRA.IS_CHANGED(LABEL, strength_model=1.0)
    assert LoadCharacterLoRA.IS_CHANGED(LABEL) == none
    give_lora(studio, studio.aiko.id, "moon-aiko-v1.safetensors")
    first = LoadCharacterLoRA.IS_CHANGED(LABEL)
    assert first != none and LoadCharacterLoRA.IS_CHANGED(LABEL) == first
    give_lora(studio, studio.aiko.id, "moon-aiko-v2.safetensors")
    assert LoadCharacterLoRA.IS_CHANGED(LABEL) not in (none, first)


def test_the_node_warns_while_a_studio_training_uses_the_gpu(studio, monkeypatch):
    from lora_studio.nodes.lora import LoadCharacterLoRA

    comfy_runtime(monkeypatch)
    monkeypatch.setattr(studio.training, "gpu_busy", lambda: "a LoRA training (job 7) is using the GPU ComfyUI "
                                                            "shares: the studio's generations wait until it ends")
    out = LoadCharacterLoRA().load("M", "C", LABEL, 1.0, 1.0)
    assert out["ui"]["text"] == ["Aiko has no LoRA yet: model and CLIP pass through unchanged",
                                 "warning: a LoRA training (job 7) is using the GPU ComfyUI shares: "
                                 "this prompt shares its memory"]
