"""The trainer in-process on the tiny model: image preparation, v-prediction, reproducibility, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from lora_studio.training.errors import TrainingCancelled  # noqa: E402
from lora_studio.training.trainer import load_image_tensor, train  # noqa: E402
from lora_studio.training.worker import parse_config  # noqa: E402
from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15, tiny_unet_config, write_sample_images

pytestmark = pytest.mark.training



@pytest.fixture(scope="module")
def vpred_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "tiny-vpred", prediction_type="v_prediction")


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    images = write_sample_images(tmp_path_factory.mktemp("images"), count=2)
    return [{"image": str(path), "caption": f"picture {i}"} for i, path in enumerate(images)]


def config_for(model: Path, items: list[dict], output: Path, **overrides):
    raw = {
        "base_model": str(model),
        "items": items,
        "output_path": str(output),
        "steps": 2,
        "rank": 2,
        "alpha": 1.0,
        "learning_rate": 1e-3,
        "resolution": TINY_RESOLUTION,
        "batch_size": 2,
        "seed": 11,
    }
    raw.update(overrides)
    return parse_config(raw)


def test_tiny_model_is_sd15_shaped_and_deterministic(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    first, second = build_tiny_sd15(tmp_path / "a"), build_tiny_sd15(tmp_path / "b")
    weights = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(first / weights)), load_file(str(second / weights))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    pipe = StableDiffusionPipeline.from_pretrained(str(first), local_files_only=True, safety_checker=None)
    assert tuple(pipe.unet.config.down_block_types) == tiny_unet_config()["down_block_types"]
    assert tuple(pipe.unet.config.up_block_types) == tiny_unet_config()["up_block_types"]
    tokenizer = CLIPTokenizer.from_pretrained(str(first / "tokenizer"))
    ids = tokenizer("1girl, RED hair ~ (smile:1.2) #tag", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    text_ids = ids[1 : ids.index(tokenizer.eos_token_id)]
    assert len(text_ids) > 10 and tokenizer.unk_token_id not in text_ids


def test_images_are_resized_cropped_and_scaled(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "wide.png"
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))  # transparent: flattened onto white
    image.paste((255, 0, 0, 255), (90, 0, 110, 100))  # a red bar in the middle survives the centre crop
    image.save(path)
    tensor = load_image_tensor(path, 64)
    assert tuple(tensor.shape) == (3, 64, 64)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert tensor[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert tensor[:, 32, 32].tolist() == [1.0, -1.0, -1.0]


def test_v_prediction_training_is_reproducible(vpred_model: Path, items: list[dict], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def run(name: str):
        losses: list[tuple[int, int, float]] = []
        config = config_for(vpred_model, items, tmp_path / f"{name}.safetensors")
        result = train(config, on_progress=lambda *event: losses.append(event))
        return result, losses, load_file(str(result.output_path))

    runs = [run("one"), run("two")]
    (first, losses_a, tensors_a), (second, losses_b, tensors_b) = runs
    assert [step for step, _, _ in losses_a] == [1, 2] and all(total == 2 for _, total, _ in losses_a)
    assert losses_a == losses_b
    assert tensors_a.keys() == tensors_b.keys() and all(tensors_a[k].equal(tensors_b[k]) for k in tensors_a)
    assert first.num_modules == 80 and first.rank == 2 and first.alpha == 1.0
    assert first.sha256 != second.sha256  # only the timestamps in the header differ


def test_stop_request_during_training_saves_nothing(vpred_model: Path, items: list[dict], tmp_path: Path) -> None:
    out_dir = tmp_path / "loras"
    steps: list[int] = []
    config = config_for(vpred_model, items, out_dir / "never.safetensors", steps=50)
    with pytest.raises(TrainingCancelled):
        train(config, on_progress=lambda step, *_: steps.append(step), should_stop=lambda: len(steps) >= 2)
    assert steps == [1, 2]
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_stop_request_before_loading_touches_nothing(vpred_model: Path, items: list[dict], tmp_path: Path) -> None:
    """A SIGTERM while torch imports or the model loads: cancelled before anything is loaded or written."""
    calls: list[int] = []
    config = config_for(vpred_model, items, tmp_path / "loras" / "never.safetensors")
    with pytest.raises(TrainingCancelled):
        train(config, on_progress=lambda step, *_: calls.append(step), should_stop=lambda: True)
    assert calls == [] and not (tmp_path / "loras").exists()
