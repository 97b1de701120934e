"""Character Prompt and the character input of every node: labels "Project / Character" read from the studio,
prompt additions, the learned-negatives switch, the style's sampler settings as typed outputs, and the
combo-typed lora_name output as ComfyUI's /prompt check and its frontend type it."""

from __future__ import annotations

import json

import pytest
from lora_studio.core.errors import InvalidInput, NotFound
from support.node_studio import (
    FIXTURES,
    comfy_runtime,
    frontend_type,
    give_lora,
    ksampler_lists,
    make_studio,
    validate_node_input,
)


@pytest.fixture
def studio(tmp_path):
    from lora_studio.nodes import bind_studio

    s = make_studio(tmp_path)
    moon = s.projects.create("Moon Academy")
    aiko = s.characters.create(moon.id, "Aiko", trigger_word="aikotnk", design_prompt="1girl, silver hair",
                               negative_prompt="hat")
    s.characters.create(moon.id, "Ren")
    sun = s.projects.create("Sun")
    s.characters.create(sun.id, "Aiko")
    s.aiko = aiko
    yield s
    bind_studio(None)
    s.close()


def test_labels_name_project_and_character_and_resolve_exactly(studio):
    from lora_studio.nodes.labels import NO_CHARACTER, character_input, character_labels, find_character

    labels = character_labels(studio)
    assert list(labels) == ["Moon Academy / Aiko", "Moon Academy / Ren", "Sun / Aiko"]
    assert character_input()[0] == list(labels)
    assert find_character(studio, "Moon Academy / Aiko").id == studio.aiko.id
    sun_aiko = find_character(studio, "Sun / Aiko")
    assert sun_aiko.id != studio.aiko.id and sun_aiko.project_slug == "sun"
    with pytest.raises(NotFound, match="Sun / Ren"):  # a character of another project cannot be named
        find_character(studio, "Sun / Ren")
    with pytest.raises(NotFound):
        find_character(studio, "moon-academy / aiko")  # the label, not slugs
    with pytest.raises(InvalidInput, match="pick a character"):
        find_character(studio, NO_CHARACTER)


def test_names_with_the_separator_stay_unambiguous(studio):
    from lora_studio.nodes.labels import character_labels, find_character

    a = studio.projects.create("A / B")
    first = studio.characters.create(a.id, "C")
    b = studio.projects.create("A")
    second = studio.characters.create(b.id, "B / C")
    labels = character_labels(studio)
    assert "A / B / C" not in labels  # both would read so: each gets its slugs
    assert labels["A / B / C (a-b/c)"] == first.id and labels["A / B / C (a/b-c)"] == second.id
    assert find_character(studio, "A / B / C (a/b-c)").id == second.id


def test_new_characters_appear_when_comfyui_asks_again(studio):
    from lora_studio.nodes import NODE_CLASS_MAPPINGS

    for node in NODE_CLASS_MAPPINGS.values():
        assert "Sun / Mio" not in node.INPUT_TYPES()["required"]["character"][0]
    studio.characters.create(studio.projects.list().items[-1].id, "Mio")
    for node in NODE_CLASS_MAPPINGS.values():  # "Refresh node definitions" reads INPUT_TYPES again
        assert "Sun / Mio" in node.INPUT_TYPES()["required"]["character"][0]


def test_prompt_additions_learned_negatives_and_sampler_settings(studio, tmp_path, monkeypatch):
    from lora_studio.core.style import StyleChanges
    from lora_studio.nodes.character import CharacterPrompt
    from support.images import image_bytes

    comfy_runtime(monkeypatch)
    studio.projects.update_style(studio.aiko.project_id, StyleChanges(
        sampler="euler_ancestral", scheduler="normal", steps=30, cfg=6.5, width=512, height=640))
    staged = tmp_path / "x.png"
    staged.write_bytes(image_bytes(seed=4))
    image = studio.images.add_files(studio.aiko.id, [("x.png", staged)]).created[0]
    studio.review.reject(image.id, categories=["not_solo"], regenerate=False)

    node = CharacterPrompt()
    out = node.run("Moon Academy / Aiko", "smiling, hat\nbeach", True, 1234)
    positive, negative, _lora, sampler, scheduler, steps, cfg, width, height, seed = out
    assert positive == "masterpiece, best quality, highly detailed, aikotnk, 1girl, silver hair, smiling, hat, beach"
    assert negative == ("worst quality, low quality, blurry, deformed, hat, multiple characters, crowd, "
                        "group shot")
    assert (sampler, scheduler, steps, cfg, width, height, seed) == ("euler_ancestral", "normal", 30, 6.5, 512,
                                                                     640, 1234)
    assert isinstance(cfg, float) and all(isinstance(v, int) for v in (steps, width, height, seed))
    off = node.run("Moon Academy / Aiko", "", False, 7)
    assert off[0] == "masterpiece, best quality, highly detailed, aikotnk, 1girl, silver hair"
    assert off[1] == "worst quality, low quality, blurry, deformed, hat"  # the learned terms only go
    assert off[9] == 7
    with pytest.raises(InvalidInput, match="additions"):
        node.run("Moon Academy / Aiko", "nul\x00", True, 0)


def test_output_order_and_types_wire_into_comfyui_nodes(studio, monkeypatch):
    from lora_studio.nodes.character import CharacterPrompt

    runtime = comfy_runtime(monkeypatch)
    give_lora(studio, studio.aiko.id, "moon-academy-aiko-v1.safetensors")
    assert CharacterPrompt.RETURN_NAMES == ("positive", "negative", "lora_name", "sampler_name", "scheduler", "steps",
                                            "cfg", "width", "height", "seed")
    types_ = CharacterPrompt.RETURN_TYPES
    assert len(types_) == len(CharacterPrompt.RETURN_NAMES) == len(CharacterPrompt.OUTPUT_TOOLTIPS)
    assert [frontend_type(t) for t in types_] == ["STRING", "STRING", "COMBO", "COMBO", "COMBO", "INT", "FLOAT",
                                                  "INT", "INT", "INT"]
    assert CharacterPrompt().RETURN_TYPES == types_  # ComfyUI also reads it on the instance
    info = json.loads((FIXTURES / "object_info.json").read_text(encoding="utf-8"))
    ksampler, latent = info["KSampler"]["input"]["required"], info["EmptyLatentImage"]["input"]["required"]
    wires = [(3, ksampler["sampler_name"][0]), (4, ksampler["scheduler"][0]), (5, ksampler["steps"][0]),
             (6, ksampler["cfg"][0]), (7, latent["width"][0]), (8, latent["height"][0]), (9, ksampler["seed"][0]),
             (0, info["CLIPTextEncode"]["input"]["required"]["text"][0])]
    for index, input_type in wires:
        assert validate_node_input(types_[index], input_type), CharacterPrompt.RETURN_NAMES[index]
        assert frontend_type(types_[index]) == frontend_type(input_type)
    # lora_name: accepted by LoraLoader whatever else its folders hold; a checkpoint combo is refused
    loras_in_comfyui = ["other/style.safetensors", "moon-academy-aiko-v1.safetensors", "z.pt"]
    assert validate_node_input(types_[2], loras_in_comfyui)
    assert not validate_node_input(types_[2], ["random_sd15.safetensors"])
    assert not validate_node_input(types_[2], "STRING")
    assert json.loads(json.dumps(types_))[2] == ["moon-academy-aiko-v1.safetensors"]  # /object_info shows the list
    assert types_[3] == runtime.samplers.KSampler.SAMPLERS


def test_lora_name_is_the_current_lora_or_a_clear_error_where_the_graph_uses_it(studio, monkeypatch):
    from lora_studio.nodes.character import CharacterPrompt

    runtime = comfy_runtime(monkeypatch)
    # ComfyUI's hidden inputs: the API-format prompt and this node's id ("2"); LoraLoader takes output 2
    uses_lora = {"2": {"class_type": "LoraStudioCharacterPrompt", "inputs": {}},
                 "9": {"class_type": "LoraLoader", "inputs": {"lora_name": ["2", 2], "model": ["1", 0]}}}
    text_only = {"2": uses_lora["2"], "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ["2", 0]}}}
    with pytest.raises(InvalidInput, match="Aiko has no LoRA yet: train one"):
        CharacterPrompt().run("Moon Academy / Aiko", "", True, 0, prompt=uses_lora, unique_id="2")
    out = CharacterPrompt().run("Moon Academy / Aiko", "", True, 0, prompt=text_only, unique_id="2")
    assert out[0].endswith("1girl, silver hair")  # the prompts flow; the unused lora_name would stop its users
    assert isinstance(out[2], runtime.ExecutionBlocker) and out[2].message.startswith("Aiko has no LoRA yet")
    give_lora(studio, studio.aiko.id, "moon-academy-aiko-v1.safetensors")
    out = CharacterPrompt().run("Moon Academy / Aiko", "", True, 0, prompt=uses_lora, unique_id="2")
    assert out[2] == "moon-academy-aiko-v1.safetensors"
    assert "moon-academy-aiko-v1.safetensors" in CharacterPrompt.RETURN_TYPES[2]
    (studio.host.loras_dir / "moon-academy-aiko-v1.safetensors").unlink()
    with pytest.raises(InvalidInput, match="Aiko's LoRA moon-academy-aiko-v1.safetensors is not in the loras folder"):
        CharacterPrompt().run("Moon Academy / Aiko", "", True, 0, prompt=uses_lora, unique_id="2")


def test_without_comfyui_the_lists_are_comfyuis_standard_ones(studio):
    from lora_studio.core.samplers import KNOWN_SAMPLERS, KNOWN_SCHEDULERS
    from lora_studio.nodes.character import CharacterPrompt

    types_ = CharacterPrompt.RETURN_TYPES
    assert (list(types_[3]), list(types_[4])) == (list(KNOWN_SAMPLERS), list(KNOWN_SCHEDULERS))
    assert (list(types_[3]), list(types_[4])) == ksampler_lists()
    assert CharacterPrompt().run("Moon Academy / Aiko", "", True, 0)[2] is None  # no executor: nothing to block


def test_a_sampler_this_comfyui_lacks_is_a_clear_error(studio, monkeypatch):
    from lora_studio.nodes.character import CharacterPrompt

    runtime = comfy_runtime(monkeypatch)
    runtime.samplers.KSampler.SAMPLERS = ["euler"]  # the style's dpmpp_2m is gone
    with pytest.raises(InvalidInput, match="sampler 'dpmpp_2m' is not one of this ComfyUI's samplers"):
        CharacterPrompt().run("Moon Academy / Aiko", "", True, 0)


def test_is_changed_follows_the_database(studio, monkeypatch):
    from lora_studio.nodes.character import CharacterPrompt

    comfy_runtime(monkeypatch)
    args = ("Moon Academy / Aiko", "", True, 0)
    first = CharacterPrompt.IS_CHANGED(*args)
    assert CharacterPrompt.IS_CHANGED(*args) == first  # nothing changed: ComfyUI's cache holds
    studio.characters.update(studio.aiko.id, design_prompt="1girl, black hair")
    second = CharacterPrompt.IS_CHANGED(*args)
    assert second != first
    give_lora(studio, studio.aiko.id, "moon-academy-aiko-v1.safetensors")
    assert CharacterPrompt.IS_CHANGED(*args) != second
