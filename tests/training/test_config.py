"""Config validation, trigger words and module layering of the training package (no torch needed)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lora_studio.training.errors import MISSING_DEPENDENCIES_MESSAGE, ConfigError
from lora_studio.training.worker import DEFAULT_TARGET_MODULES, TrainConfig, TrainItem, parse_config
from PIL import Image

PACK_ROOT = Path(__file__).resolve().parents[2]
TRAINING_DIR = PACK_ROOT / "training"
OWN_MODULES = ("__init__.py", "errors.py", "kohya.py", "trainer.py", "worker.py")
ALLOWED_IMPORTS = {"torch", "diffusers", "peft", "transformers", "safetensors", "numpy", "PIL"}


@pytest.fixture
def base_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / name).mkdir(parents=True)
    return folder


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return path


def raw_config(base_model: Path, image: Path, **overrides) -> dict:
    raw = {
        "base_model": str(base_model),
        "items": [{"image": str(image), "caption": "1girl, red hair"}],
        "output_path": str(base_model.parent / "out" / "lora.safetensors"),
        "steps": 10,
        "rank": 4,
        "alpha": 2,
        "learning_rate": 1e-4,
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def test_minimal_config_gets_defaults(base_model: Path, image: Path) -> None:
    config = parse_config(raw_config(base_model, image))
    assert config.resolution == 512 and config.batch_size == 1 and config.seed == 0
    assert config.alpha == 2.0 and isinstance(config.alpha, float)
    assert config.target_modules == DEFAULT_TARGET_MODULES == ("to_q", "to_k", "to_v", "to_out.0")
    assert config.items == (TrainItem(image, "1girl, red hair"),)
    assert config.metadata == {} and config.trigger_word == "" and config.device == "cpu"


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("1girl, red hair", "akane_v1, 1girl, red hair"),
        ("akane_v1, 1girl", "akane_v1, 1girl"),
        ("1girl, AKANE_V1 smiling", "1girl, AKANE_V1 smiling"),
        ("akane_v12, 1girl", "akane_v1, akane_v12, 1girl"),
        ("", "akane_v1"),
    ],
)
def test_trigger_word_is_prepended_once(caption: str, expected: str) -> None:
    config = TrainConfig(Path("/m"), (), Path("/o.safetensors"), 1, 1, 1.0, 1e-4, trigger_word="akane_v1")
    assert config.caption_for(TrainItem(Path("/i.png"), caption)) == expected
    assert TrainConfig(Path("/m"), (), Path("/o"), 1, 1, 1.0, 1.0).caption_for(TrainItem(Path("/i"), "x")) == "x"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_model": None}, "missing the required field 'base_model'"),
        ({"items": []}, "there are no training items"),
        ({"items": None}, "missing the required field 'items'"),
        ({"items": [{"caption": "x"}]}, "items[0] has no image path"),
        ({"items": [{"image": "rel/a.png"}]}, "must be absolute"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"steps": "3"}, "steps must be an integer, got str '3'"),
        ({"rank": True}, "rank must be an integer, got bool"),
        ({"alpha": 0}, "alpha must be a positive number"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
        ({"resolution": 36}, "multiple of 8"),
        ({"metadata": {"a": 1}}, "metadata values must be strings"),
        ({"target_modules": []}, "target_modules must be a non-empty list"),
        ({"device": "tpu"}, "device must be one of"),
        ({"output_path": "relative.safetensors"}, "output_path must be an absolute path"),
    ],
)
def test_invalid_fields_have_clear_messages(base_model: Path, image: Path, overrides: dict, message: str) -> None:
    raw = raw_config(base_model, image)
    for key, value in overrides.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_null_optional_fields_mean_defaults(base_model: Path, image: Path) -> None:
    raw = raw_config(base_model, image, items=[{"image": str(image), "caption": None}])
    raw.update(trigger_word=None, metadata=None, seed=None, resolution=None)
    config = parse_config(raw)
    assert config.items[0].caption == "" and config.trigger_word == "" and config.metadata == {}
    assert config.seed == 0 and config.resolution == 512


def test_single_file_checkpoint_is_refused(tmp_path: Path, image: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ConfigError, match="single-file checkpoints are not supported yet.*diffusers-format"):
        parse_config(raw_config(checkpoint, image))


def test_incomplete_model_folder_names_missing_parts(base_model: Path, image: Path) -> None:
    (base_model / "vae").rmdir()
    with pytest.raises(ConfigError, match="missing vae/"):
        parse_config(raw_config(base_model, image))


def test_every_unreadable_image_is_listed(base_model: Path, image: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    items = [{"image": str(image)}, {"image": str(broken)}, {"image": str(tmp_path / "gone.jpg")}]
    with pytest.raises(ConfigError) as info:
        parse_config(raw_config(base_model, image, items=items))
    message = str(info.value)
    assert "cannot open 2 of 3 training images" in message
    assert "broken.png" in message and "gone.jpg: file not found" in message


def test_existing_output_is_never_overwritten(base_model: Path, image: Path) -> None:
    out = base_model.parent / "old.safetensors"
    out.write_bytes(b"previous lora")
    with pytest.raises(ConfigError, match="already exists"):
        parse_config(raw_config(base_model, image, output_path=str(out)))
    assert out.read_bytes() == b"previous lora"


def test_training_package_is_import_light() -> None:
    """The worker's own bootstrap imports every training module without torch and without lora_studio."""
    code = (
        "import importlib, sys, runpy\n"
        f"ns = runpy.run_path({str(TRAINING_DIR / 'worker.py')!r}, run_name='not_main')\n"
        "pkg = ns['bootstrap_package']()\n"
        "for name in ('training', 'training.errors', 'training.kohya', 'training.trainer', 'training.worker'):\n"
        "    importlib.import_module(pkg + '.' + name)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'peft', 'transformers', 'safetensors', 'lora_studio')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", OWN_MODULES)
def test_training_modules_respect_layering(module: str) -> None:
    tree = ast.parse((TRAINING_DIR / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        for root in roots:
            assert root in sys.stdlib_module_names or root in ALLOWED_IMPORTS, f"{module} imports {root}"


def test_missing_dependencies_message(tmp_path: Path, base_model: Path, image: Path) -> None:
    """With torch unimportable the worker reports the install hint (as an error event, exit code 1)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(raw_config(base_model, image)), encoding="utf-8")
    code = (
        "import importlib.abc, runpy, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'peft'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(TRAINING_DIR / "worker.py"), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events == [{"event": "error", "message": MISSING_DEPENDENCIES_MESSAGE}]
    assert MISSING_DEPENDENCIES_MESSAGE == (
        "training needs torch and the 'train' extra (pip install torch, then pip install 'lora-studio[train]')"
    )
