"""Config validation, trigger words and module layering of the training package (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lora_studio.training.config import TrainConfig, TrainItem, parse_config
from lora_studio.training.errors import MISSING_DEPENDENCIES_MESSAGE, ConfigError
from PIL import Image
from support.train_cfg import fake_model_folder

PACK_ROOT = Path(__file__).resolve().parents[2]
TRAINING_DIR = PACK_ROOT / "training"
# The studio side of training/ (it runs in the studio, not in the worker); every other module is the engine.
STUDIO_SIDE = {"service.py", "catalog.py", "worker_client.py", "request.py"}
ENGINE_MODULES = sorted(p.stem for p in TRAINING_DIR.glob("*.py") if p.name not in STUDIO_SIDE and p.stem != "__init__")


@pytest.fixture
def base_model(tmp_path: Path) -> Path:
    return fake_model_folder(tmp_path / "model")


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
    assert config.target_modules is None  # kohya's default coverage (targets.unet_lora_targets)
    assert config.items == (TrainItem(image, "1girl, red hair"),)
    assert config.metadata == {} and config.trigger_word == "" and config.device == "auto"
    assert config.arch == "auto" and not config.conv and config.conv_rank == 4 and config.conv_alpha == 2.0
    assert not config.train_text_encoder and config.text_encoder_lr == 1e-4  # derived: the learning rate
    # the studio's defaults for a character LoRA (one set for every door): cosine, warm-up 5% of the steps, min-SNR 5
    assert (config.optimizer, config.lr_scheduler, config.warmup_steps) == ("adamw", "cosine", 0)
    assert (config.min_snr_gamma, config.noise_offset, config.grad_accum) == (5.0, 0.0, 1)
    assert config.mixed_precision == "bf16" and not config.gradient_checkpointing and not config.compile
    assert config.bucketing and not config.flip and not config.shuffle_tags and config.keep_tokens == 1
    assert config.cache_dir is None and config.checkpoint_dir is None and config.resume_from is None
    assert config.checkpoint_every == 0 and config.sample_every == 0 and config.sample_size == 512


def test_all_options_parse(base_model: Path, image: Path, tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    config = parse_config(
        raw_config(
            base_model, image, alpha=None, network_alpha=8, conv=True, conv_rank=8, conv_alpha=4,
            train_text_encoder=True, text_encoder_lr=5e-5, optimizer="adamw8bit", lr_scheduler="cosine",
            warmup_steps=3, min_snr_gamma=5, noise_offset=0.05, grad_accum=2, gradient_checkpointing=True,
            compile=True, mixed_precision="fp16", shuffle_tags=True, keep_tokens=2, tag_dropout=0.1, caption_dropout=0.05,
            flip=True, bucketing=False, cache_dir=str(tmp_path / "cache"), checkpoint_dir=str(tmp_path / "ckpt"),
            checkpoint_every=5, resume_from=str(tmp_path / "ckpt"), sample_every=5, sample_dir=str(tmp_path / "s"),
            sample_prompt="akane, smile", sample_negative="lowres", sample_steps=4, sample_size=256, arch="sd15",
        )
    )
    assert config.alpha == 8.0 and config.conv and (config.conv_rank, config.conv_alpha) == (8, 4.0)
    assert config.train_text_encoder and config.text_encoder_lr == 5e-5
    assert (config.optimizer, config.lr_scheduler, config.warmup_steps) == ("adamw8bit", "cosine", 3)
    assert (config.min_snr_gamma, config.noise_offset, config.grad_accum) == (5.0, 0.05, 2)
    assert config.gradient_checkpointing and config.compile and config.mixed_precision == "fp16"
    assert config.shuffle_tags and config.keep_tokens == 2 and config.tag_dropout == 0.1
    assert config.caption_dropout == 0.05 and config.flip and not config.bucketing
    assert config.cache_dir == tmp_path / "cache" and config.resume_from == tmp_path / "ckpt"
    assert (config.checkpoint_every, config.sample_every, config.sample_steps, config.sample_size) == (5, 5, 4, 256)
    assert config.effective_sample_prompt == "akane, smile" and config.arch == "sd15"


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
        ({"steps": 0}, "steps must be between 1 and 100000, got 0"),
        ({"rank": 257}, "rank must be between 1 and 256"),
        ({"resolution": 4096}, "resolution must be between 32 and 2048"),
        ({"steps": "3"}, "steps must be an integer, got str '3'"),
        ({"rank": True}, "rank must be an integer, got bool"),
        ({"alpha": 0}, "alpha must be a positive number"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
        ({"resolution": 36}, "multiple of 8"),
        ({"metadata": {"a": 1}}, "metadata values must be strings"),
        ({"target_modules": []}, "target_modules must be a non-empty list"),
        ({"device": "tpu"}, "device must be one of"),
        ({"optimizer": "sgd"}, "optimizer must be one of adamw, adamw8bit"),
        ({"lr_scheduler": "linear"}, "lr_scheduler must be one of"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
        ({"arch": "sd3"}, "arch must be one of"),
        ({"arch": "sdxl"}, "arch is 'sdxl' but the base model model is 'sd15'"),
        ({"flip": "yes"}, "flip must be true or false"),
        ({"grad_accum": 0}, "grad_accum must be between 1 and 1024"),
        ({"tag_dropout": 1.0}, "tag_dropout must be below 1.0"),
        ({"noise_offset": -0.1}, "noise_offset must be a non-negative number"),
        ({"text_encoder_lr": 0}, "text_encoder_lr must be a positive number"),
        ({"checkpoint_every": 10}, "checkpoint_every needs a checkpoint_dir"),
        ({"checkpoint_dir": "ckpt"}, "checkpoint_dir must be an absolute path"),
        ({"sample_every": 10}, "sample_every needs a sample_dir"),
        ({"sample_every": 10, "sample_dir": "/tmp/samples"}, "needs a sample_prompt (or a trigger_word"),
        ({"resume_from": "/nonexistent/ckpt"}, "resume_from is not a checkpoint folder"),
        ({"alpha": None, "network_alpha": 3, "rank": 4}, None),
        ({"network_alpha": 3}, "network_alpha and alpha are the same setting but differ"),
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
    if message is None:  # a valid alias
        assert parse_config(raw).alpha == 3.0
        return
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_null_optional_fields_mean_defaults(base_model: Path, image: Path) -> None:
    raw = raw_config(base_model, image, items=[{"image": str(image), "caption": None}])
    raw.update(trigger_word=None, metadata=None, seed=None, resolution=None)
    config = parse_config(raw)
    assert config.items[0].caption == "" and config.trigger_word == "" and config.metadata == {}
    assert config.seed == 0 and config.resolution == 512


def test_unusable_single_files_are_refused(tmp_path: Path, image: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ConfigError, match="model.safetensors is not a valid .safetensors file"):
        parse_config(raw_config(checkpoint, image))
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(ConfigError, match="only .safetensors checkpoints"):
        parse_config(raw_config(pickle, image))


def test_other_architectures_are_refused(tmp_path: Path, image: Path) -> None:
    folder = fake_model_folder(tmp_path / "sd2")
    (folder / "text_encoder" / "config.json").write_text('{"hidden_size": 1024, "hidden_act": "gelu"}')
    (folder / "unet" / "config.json").write_text('{"in_channels": 4, "cross_attention_dim": 1024}')
    with pytest.raises(ConfigError, match="SD2.x"):
        parse_config(raw_config(folder, image))
    assert parse_config(raw_config(fake_model_folder(tmp_path / "xl", "sdxl"), image), check_files=True).arch == "auto"


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
        f"for name in {['training'] + ['training.' + m for m in ENGINE_MODULES]!r}:\n"
        "    importlib.import_module(pkg + '.' + name)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'peft', 'transformers', 'safetensors', 'lora_studio')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_engine_list_is_complete() -> None:
    """The import-light check above covers every engine module (tests/unit/test_layering.py holds their imports)."""
    assert {"config", "worker", "trainer", "loop", "run_data", "models", "kohya"} <= set(ENGINE_MODULES)
    assert not {"service", "catalog", "worker_client", "request"} & set(ENGINE_MODULES)


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


# --------------------------------------------------------------------------- one description per option


def test_defaults_depend_on_the_architecture_and_on_other_options() -> None:
    from lora_studio.training import config as cfg

    sd15, sdxl = cfg.defaults("sd15"), cfg.defaults("sdxl")
    assert (sd15["resolution"], sd15["sample_size"], sdxl["resolution"], sdxl["sample_size"]) == (512, 512, 1024, 1024)
    assert {k: v for k, v in sd15.items() if k not in ("resolution", "sample_size")} == {
        k: v for k, v in sdxl.items() if k not in ("resolution", "sample_size")}
    assert (sd15["steps"], sd15["rank"], sd15["alpha"], sd15["warmup_steps"]) == (1500, 16, 8.0, 75)
    assert (sd15["lr_scheduler"], sd15["min_snr_gamma"], sd15["checkpoint_every"], sd15["sample_every"]) == (
        "cosine", 5.0, 250, 250)
    derived = cfg.resolve({"rank": 32, "steps": 400, "learning_rate": 2e-4, "resolution": 768}, "sdxl")
    assert (derived["alpha"], derived["conv_rank"], derived["conv_alpha"], derived["warmup_steps"]) == (16.0, 32, 16.0, 20)
    assert (derived["text_encoder_lr"], derived["sample_size"]) == (2e-4, 768)
    assert cfg.resolve({"steps": 10000, "alpha": 3}, "sd15")["warmup_steps"] == 100
    assert cfg.resolve({"alpha": 3}, "sd15")["alpha"] == 3.0 and cfg.resolve({"alpha": 3}, "sd15")["conv_alpha"] == 3.0


def test_the_worker_gets_the_same_defaults_as_every_door(tmp_path: Path, image: Path) -> None:
    """A worker config without options resolves like a request without options, for the model's architecture."""
    from lora_studio.training import config as cfg

    for arch in ("sd15", "sdxl"):
        model = fake_model_folder(tmp_path / arch, arch)
        config = parse_config({"base_model": str(model), "items": [{"image": str(image)}],
                               "output_path": str(tmp_path / f"{arch}.safetensors")})
        expected = {**cfg.defaults(arch), "checkpoint_every": 0, "sample_every": 0}  # no folders: off
        assert {name: getattr(config, name) for name in cfg.USER_OPTIONS} == expected
        assert config.resolution == (1024 if arch == "sdxl" else 512)


def test_a_config_file_keeps_checkpoints_and_samples_beside_it(base_model: Path, image: Path, tmp_path: Path) -> None:
    from lora_studio.training.config import load_config

    path = tmp_path / "job" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw_config(base_model, image, trigger_word="akane")), encoding="utf-8")
    config = load_config(path)
    assert (config.checkpoint_dir, config.checkpoint_every) == (path.parent / "checkpoints", 250)
    assert (config.sample_dir, config.sample_every, config.effective_sample_prompt) == (path.parent / "samples", 250,
                                                                                        "akane")
    path.write_text(json.dumps(raw_config(base_model, image, checkpoint_every=0)), encoding="utf-8")
    config = load_config(path)
    assert config.checkpoint_every == 0 and config.sample_every == 0  # off when asked, and without a prompt


def test_aliases_are_described_once() -> None:
    from lora_studio.training import config as cfg

    assert cfg.ALIASES == {"network_dim": "rank", "network_alpha": "alpha", "conv_dim": "conv_rank"}
    assert cfg.check_options({"network_dim": 8, "network_alpha": 2, "conv_dim": 4}) == {
        "rank": 8, "alpha": 2.0, "conv_rank": 4}
    with pytest.raises(ConfigError, match="not training options: items"):
        cfg.check_options({"items": []})  # the plumbing is the studio's, never a request's


def _numeric_options():
    from lora_studio.training import config as cfg

    return [n for n in cfg.USER_OPTIONS if cfg.option(n).max is not None]


@pytest.mark.parametrize("name", _numeric_options())
def test_every_door_checks_the_same_bounds(name: str, base_model: Path, image: Path) -> None:
    """The worker's parser, the request check (the API, the node and the CLI) and the published spec use one
    set of numbers: the bound itself passes, beyond it fails in both."""
    from lora_studio.core.errors import InvalidInput
    from lora_studio.training import config as cfg
    from lora_studio.training.request import TRAIN_SPEC, TrainRequest

    o = cfg.option(name)
    assert (TRAIN_SPEC[name].min, TRAIN_SPEC[name].max, TRAIN_SPEC[name].choices) == (o.min, o.max, o.choices)
    top = o.max if not o.below else o.max - 0.01
    if o.multiple_of:
        top -= top % o.multiple_of
    assert TrainRequest.check({"base_model": "m", name: top}).options[name] == top
    beyond = o.max if o.below else (o.max + 1 if o.kind == "int" else o.max * 1.5)
    with pytest.raises(InvalidInput):
        TrainRequest.check({"base_model": "m", name: beyond})
    with pytest.raises(ConfigError, match=name):
        parse_config(raw_config(base_model, image, **{name: beyond}), check_files=False)
    if o.min is not None and o.min >= 1:
        with pytest.raises(ConfigError, match=name):
            parse_config(raw_config(base_model, image, **{name: o.min - 1}), check_files=False)
        with pytest.raises(InvalidInput):
            TrainRequest.check({"base_model": "m", name: o.min - 1})
