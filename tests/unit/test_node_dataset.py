"""Save to Dataset: the character input by label, and what the node shows on the canvas (the count, the
skipped files, previews of the added images served by the studio's own route)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from support.node_studio import make_studio


class Images:
    """What ComfyUI passes as IMAGE (a batch of HxWx3 floats); only .cpu().numpy() is used."""

    def __init__(self, arrays):
        self.items = [types.SimpleNamespace(cpu=lambda a=a: types.SimpleNamespace(numpy=lambda: a)) for a in arrays]

    def __iter__(self):
        return iter(self.items)


@pytest.fixture
def studio(tmp_path):
    from lora_studio.nodes import bind_studio

    s = make_studio(tmp_path)
    project = s.projects.create("Moon Academy")
    s.aiko = s.characters.create(project.id, "Aiko")
    yield s
    bind_studio(None)
    s.close()


def test_added_images_show_on_the_node(studio):
    from lora_studio.nodes.dataset import SaveToDataset

    rng = np.random.default_rng(0)
    first, second = (rng.random((32, 32, 3), dtype=np.float32) for _ in range(2))
    batch = Images([first, second, first])  # the third is an exact duplicate of the first
    out = SaveToDataset().run(batch, "Moon Academy / Aiko", "a caption", prompt={"1": {"class_type": "X"}})
    assert out["result"] == (batch,)
    created = studio.images.list(studio.aiko.id).items
    assert [i.caption for i in created] == ["a caption", "a caption"]
    assert all(i.source == "comfyui" and i.metadata["prompt"] == {"1": {"class_type": "X"}} for i in created)
    text = out["ui"]["text"]
    assert text[0] == "2 images added to Aiko's pending queue"
    assert text[1].startswith("skipped aiko_002.png: exact duplicate of image")
    assert out["ui"]["lora_studio_images"] == [
        {"url": f"/lora-studio/v1/images/{i.id}/file", "kind": "image", "id": i.id} for i in created]
    one = SaveToDataset().run(Images([rng.random((32, 32, 3), dtype=np.float32)]), "Moon Academy / Aiko", "")
    assert one["ui"]["text"] == ["1 image added to Aiko's pending queue"]


def test_the_character_input_names_project_and_character(studio):
    from lora_studio.core.errors import NotFound
    from lora_studio.nodes.dataset import SaveToDataset

    inputs = SaveToDataset.INPUT_TYPES()
    assert list(inputs["required"]) == ["images", "character", "caption"]
    assert inputs["required"]["character"][0] == ["Moon Academy / Aiko"]
    with pytest.raises(NotFound):
        SaveToDataset().run(Images([np.zeros((8, 8, 3), np.float32)]), "Aiko", "")
    assert studio.images.list(studio.aiko.id).items == []
