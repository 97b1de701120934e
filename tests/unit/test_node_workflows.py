"""The pack's example workflows (example_workflows/*.json, which ComfyUI's template browser lists: its
app/custom_node_manager.py serves <pack>/example_workflows/*.json, the editor's own format) against the
recorded ComfyUI 0.3.64 /object_info plus the pack's nodes as ComfyUI's server describes them: every node class
exists, every widget value is in range or among the choices, every link joins types the editor accepts (lists
are COMBO) and /prompt accepts (ComfyUI's own check, with the pack's combo outputs), and the API-format graph
the editor queues from it passes the studio's graph validator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lora_studio.generation.checks import graph_problems
from support.comfy_schema import merged_object_info, with_server_files
from support.node_studio import comfy_runtime, frontend_type, give_lora, make_studio, node_info, validate_node_input

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # the editor's own nodes: never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
LORA = "moon-academy-aiko-v1.safetensors"


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """(object_info, node classes) of a ComfyUI with the pack and a studio that has Moon Academy / Aiko with a
    LoRA, the checkpoint the examples name and that LoRA in its folders."""
    from lora_studio.nodes import NODE_CLASS_MAPPINGS, bind_studio

    monkeypatch = pytest.MonkeyPatch()
    comfy_runtime(monkeypatch)
    s = make_studio(tmp_path_factory.mktemp("examples"))
    try:
        (s.settings.effective_models_dir / CHECKPOINT).write_bytes(b"x")
        project = s.projects.create("Moon Academy")
        aiko = s.characters.create(project.id, "Aiko")
        give_lora(s, aiko.id, LORA)
        info = merged_object_info("object_info.json")
        info.update({name: node_info(name, cls) for name, cls in NODE_CLASS_MAPPINGS.items()})
        yield with_server_files(info, checkpoints=[CHECKPOINT], loras=["other.safetensors", LORA]), NODE_CLASS_MAPPINGS
    finally:
        bind_studio(None)
        s.close()
        monkeypatch.undo()


def widget_inputs(spec: dict) -> list[tuple[str, list]]:
    """The inputs that are widgets, in the editor's order (required, then optional): not node types."""
    out = []
    for category in ("required", "optional"):
        inputs = spec["input"].get(category) or {}
        for name in spec.get("input_order", {}).get(category) or list(inputs):  # the server's order
            input_spec = inputs[name]
            type_ = input_spec[0]
            if isinstance(type_, list) or type_ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                out.append((name, input_spec))
    return out


def has_control(name: str, input_spec: list) -> bool:
    """The editor adds a control value (randomize/fixed/…) after an INT with control_after_generate, and after
    one named seed or noise_seed unless it says false (useIntWidget.ts)."""
    options = input_spec[1] if len(input_spec) > 1 else {}
    explicit = options.get("control_after_generate")
    return input_spec[0] == "INT" and (explicit if explicit is not None else name in ("seed", "noise_seed"))


def widget_values(node: dict, spec: dict) -> dict:
    values, queue = {}, list(node.get("widgets_values") or [])
    for name, input_spec in widget_inputs(spec):
        assert queue, f"{node['type']} #{node['id']}: no saved value for {name}"
        values[name] = queue.pop(0)
        if has_control(name, input_spec):
            assert queue.pop(0) in CONTROL_VALUES, f"{node['type']}.{name}: control value"
    assert queue == [], f"{node['type']} #{node['id']}: values left over: {queue}"
    return values


def check_value(where: str, value, input_spec: list) -> None:
    type_, options = input_spec[0], (input_spec[1] if len(input_spec) > 1 else {})
    if isinstance(type_, list):
        assert value in type_, f"{where}: {value!r} not among {type_[:8]}"
    elif type_ in ("INT", "FLOAT"):
        assert not isinstance(value, bool) and isinstance(value, int | float), where
        assert type_ == "FLOAT" or isinstance(value, int), where
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: {value} out of range"
    elif type_ == "BOOLEAN":
        assert isinstance(value, bool), where
    elif type_ == "STRING":
        assert isinstance(value, str), where


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt the editor queues for this workflow (graphToPrompt): widget values by name, links
    as [node id, output index]; the editor's own nodes left out."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        inputs = dict(widget_values(node, object_info[node["type"]]))
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_there_are_the_examples_the_pack_promises():
    assert [p.stem for p in EXAMPLES] == ["character_txt2img_via_loraloader", "character_txt2img_with_lora",
                                          "generate_to_dataset", "train_lora"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_against_comfyui_and_the_pack(path, server):
    object_info, classes = server
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert workflow["version"] == 0.4 and isinstance(workflow["nodes"], list) and isinstance(workflow["links"], list)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert max(nodes) <= workflow["last_node_id"] and max([0, *(x[0] for x in workflow["links"])]) <= \
        workflow["last_link_id"]
    for node in workflow["nodes"]:
        assert node["type"] in object_info or node["type"] in FRONTEND_ONLY, node["type"]
        if node["type"] in FRONTEND_ONLY:
            continue
        spec = object_info[node["type"]]
        linked = {slot["name"] for slot in node.get("inputs") or [] if slot.get("link") is not None}
        for name, value in widget_values(node, spec).items():
            if name not in linked:  # a linked widget's saved value is not used
                check_value(f"{node['type']}.{name}", value, dict(widget_inputs(spec))[name])
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        out_node, in_node = nodes[origin], nodes[target]
        out_spec, in_spec = object_info[out_node["type"]], object_info[in_node["type"]]
        assert link_id in out_node["outputs"][origin_slot]["links"] and in_node["inputs"][target_slot]["link"] == link_id
        input_name = in_node["inputs"][target_slot]["name"]
        category = "required" if input_name in in_spec["input"]["required"] else "optional"
        input_type = in_spec["input"][category][input_name][0]
        where = f"{out_node['type']}.{out_spec['output_name'][origin_slot]} -> {in_node['type']}.{input_name}"
        # the editor: slot types (a list is COMBO) must match
        assert frontend_type(out_spec["output"][origin_slot]) == frontend_type(input_type) == link_type, where
        # /prompt: ComfyUI's own check, with the output type as the node class declares it
        declared = classes[out_node["type"]].RETURN_TYPES[origin_slot] if out_node["type"] in classes else \
            out_spec["output"][origin_slot]
        assert validate_node_input(declared, input_type), where
    assert graph_problems(to_api(workflow, object_info), object_info) == []


def test_the_lora_name_link_is_the_combo_link_comfyui_accepts(server):
    """The LoraLoader example links Character Prompt's lora_name to LoraLoader's lora_name; /prompt refuses the
    same output on a checkpoint combo (a file list without the character's LoRA)."""
    object_info, classes = server
    workflow = json.loads((REPO / "example_workflows" / "character_txt2img_via_loraloader.json").read_text())
    nodes = {node["id"]: node["type"] for node in workflow["nodes"]}
    combo_links = {(nodes[x[1]], x[2], nodes[x[3]], x[5]) for x in workflow["links"] if x[5] == "COMBO"}
    assert combo_links == {("LoraStudioCharacterPrompt", 2, "LoraLoader", "COMBO"),
                           ("LoraStudioCharacterPrompt", 3, "KSampler", "COMBO"),
                           ("LoraStudioCharacterPrompt", 4, "KSampler", "COMBO")}
    lora_name = classes["LoraStudioCharacterPrompt"].RETURN_TYPES[2]
    assert LORA in lora_name
    assert validate_node_input(lora_name, object_info["LoraLoader"]["input"]["required"]["lora_name"][0])
    assert not validate_node_input(lora_name, object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0])
