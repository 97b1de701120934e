"""The training worker as the studio runs it: a subprocess speaking JSON lines on stdout."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15, write_sample_images
from support.train_cfg import fake_model_folder

PACK_ROOT = Path(__file__).resolve().parents[2]
WORKER = PACK_ROOT / "training" / "worker.py"
COMFY_KEYS = PACK_ROOT / "tests" / "fixtures" / "comfyui" / "lora_keys_sd15.txt"
HAS_TRAIN_STACK = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "peft", "transformers"))
needs_train_stack = pytest.mark.skipif(not HAS_TRAIN_STACK, reason="needs torch and the train extra")

# Runs a worker script with `lora_studio` made unimportable, as in a bare custom_nodes/ folder.
NO_LORA_STUDIO = """
import importlib.abc, os, runpy, sys
class NoLoraStudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lora_studio":
            raise ModuleNotFoundError("lora_studio is not installed here", name=name)
sys.meta_path.insert(0, NoLoraStudio())
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def write_config(folder: Path, **fields) -> Path:
    path = folder / f"config-{len(list(folder.glob('config-*.json')))}.json"
    path.write_text(json.dumps(fields), encoding="utf-8")
    return path


def quiet_env(**overrides: str) -> dict[str, str]:
    """One torch thread: the tiny model gains nothing from more, and spinning threads crawl on a busy CI box."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **overrides}


def run_worker(config: Path, *, worker: Path = WORKER, wrapper: str | None = None, env: dict | None = None, **kwargs):
    command = [sys.executable, str(worker), str(config)]
    if wrapper is not None:
        command = [sys.executable, "-c", wrapper, str(worker), str(config)]
    env = quiet_env() if env is None else env
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, **kwargs)
    return result, [json.loads(line) for line in result.stdout.splitlines()]



@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "tiny-sd15")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    images = write_sample_images(tmp_path_factory.mktemp("images"), count=3)
    captions = ["1girl, red hair, smiling", "1girl, red hair, from side", "the cat"]
    return [{"image": str(path), "caption": caption} for path, caption in zip(images, captions, strict=True)]


def training_fields(model: Path, items: list[dict], output: Path, **overrides) -> dict:
    fields = {
        "base_model": str(model),
        "items": items,
        "output_path": str(output),
        "steps": 3,
        "rank": 4,
        "alpha": 2.0,
        "learning_rate": 1e-3,
        "resolution": TINY_RESOLUTION,
        "seed": 3,
        "trigger_word": "akane_v1",
        "metadata": {"lora_studio_character": "Akane"},
        # the engine tests' plain recipe (the studio's defaults are cosine, min-SNR 5, device auto)
        "lr_scheduler": "constant",
        "min_snr_gamma": 0.0,
        "device": "cpu",
    }
    fields.update(overrides)
    return fields


def copy_pack(target: Path) -> Path:
    """The pack as ComfyUI users install it: a hyphenated custom_nodes/ folder, nothing pip-installed."""
    pack = target / "ComfyUI" / "custom_nodes" / "lora-studio"
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "tests", "__pycache__", "*.egg-info", "node_modules", ".pytest_cache", ".ruff_cache"
    )
    shutil.copytree(PACK_ROOT, pack, ignore=ignore)
    (pack / "__init__.py").write_text("raise RuntimeError('the worker must not run the pack root __init__')\n")
    return pack


@pytest.fixture(scope="module")
def trained(tiny_model: Path, dataset: list[dict], tmp_path_factory: pytest.TempPathFactory):
    """One real training run (3 steps), started from a bare copy of the pack with lora_studio unimportable,
    PYTHON* variables cleared and the working directory elsewhere."""
    work = tmp_path_factory.mktemp("run")
    pack = copy_pack(work)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    output = work / "loras" / "akane-v1.safetensors"
    job = work / "job"
    config = write_config(
        elsewhere,
        **training_fields(
            tiny_model, dataset, output, checkpoint_dir=str(job / "checkpoints"), checkpoint_every=2,
            sample_every=3, sample_dir=str(job / "samples"), sample_steps=2, sample_size=64,
            cache_dir=str(job / "cache"), flip=True, network_alpha=2.0, alpha=None,
        ),
    )
    env = {k: v for k, v in quiet_env().items() if not k.startswith("PYTHON")}
    worker = pack / "training" / "worker.py"
    result, events = run_worker(config, worker=worker, wrapper=NO_LORA_STUDIO, cwd=elsewhere, env=env)
    return output, result, events, pack


@pytest.mark.training
@needs_train_stack
def test_worker_trains_a_comfyui_loadable_lora(trained) -> None:
    from safetensors import safe_open

    output, result, events, _ = trained
    assert result.returncode == 0, result.stderr[-3000:]
    assert events[0] == {"event": "start", "total_steps": 3, "arch": "sd15", "resume_step": 0}
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3]
    for e in progress:
        assert e["total_steps"] == 3 and isinstance(e["loss"], float) and math.isfinite(e["loss"])
        assert math.isfinite(e["smooth_loss"]) and e["it_s"] > 0 and e["eta_s"] >= 0 and e["lr"] == 1e-3
    kinds = [e["event"] for e in events]
    assert kinds.index("checkpoint") == kinds.index("progress") + 2  # right after step 2
    assert [e for e in events if e["event"] == "checkpoint"] == [
        {"event": "checkpoint", "step": 2, "path": str(output.parent.parent / "job" / "checkpoints" / "step-2")}
    ]
    samples = [e for e in events if e["event"] == "sample"]
    assert [(e["step"], e["prompt"]) for e in samples] == [(3, "akane_v1")] and Path(samples[0]["path"]).is_file()
    phases = [(e["name"], e["done"], e["total"]) for e in events if e["event"] == "phase"]
    assert ("caching", 6, 6) in phases and ("saving", 1, 1) in phases  # 3 images, both orientations
    done = events[-1]
    assert done["event"] == "done" and kinds.count("done") == 1
    assert done["output_path"] == str(output) and done["rank"] == 4 and done["alpha"] == 2.0
    assert done["arch"] == "sd15" and done["compiled"] is False
    assert done["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp file left
    comfy_names = set(COMFY_KEYS.read_text(encoding="utf-8").split())
    with safe_open(str(output), "pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
        modules = {key.rsplit(".lora_", 1)[0].removesuffix(".alpha") for key in keys}
        assert len(modules) == done["num_modules"] == 120 and len(keys) == 3 * 120  # kohya's default coverage
        assert modules <= comfy_names
        for module in modules:
            assert handle.get_tensor(f"{module}.alpha").item() == 2.0
            if "mid_block_attentions_0_transformer_blocks_0_attn1_to_" in module and module[-1] in "qk":
                continue  # self-attention over the 1x1 middle map: one token, so q and k get no gradient
            assert handle.get_tensor(f"{module}.lora_up.weight").abs().max() > 0  # trained: B started at zero
    assert float(metadata["ss_network_alpha"]) == 2.0 and metadata["ss_network_dim"] == "4"
    assert metadata["ss_steps"] == "3" and metadata["ss_num_train_images"] == "3"
    assert metadata["ss_output_name"] == "akane-v1" and metadata["lora_studio_trigger_word"] == "akane_v1"
    assert metadata["lora_studio_character"] == "Akane"


@pytest.mark.training
@needs_train_stack
def test_exported_lora_changes_the_unet_and_strength_zero_does_not(trained, tiny_model: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from lora_studio.training.kohya import kohya_module_name, module_names
    from safetensors.torch import load_file

    output, result, _, _ = trained
    assert result.returncode == 0, result.stderr[-3000:]
    tensors = load_file(str(output))

    def unet_output(strength: float | None) -> torch.Tensor:
        unet = UNet2DConditionModel.from_pretrained(str(tiny_model), subfolder="unet").eval()
        modules = {kohya_module_name(path): module for path, module in unet.named_modules() if path}
        with torch.no_grad():
            if strength is not None:
                for name in module_names(tensors):
                    down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
                    scale = strength * tensors[f"{name}.alpha"].item() / down.shape[0]
                    weight = modules[name].weight
                    weight += scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            generator = torch.Generator().manual_seed(0)
            sample = torch.randn(1, 4, 8, 8, generator=generator)
            text = torch.randn(1, 77, 32, generator=generator)
            return unet(sample, 400, encoder_hidden_states=text).sample

    base = unet_output(None)
    assert torch.equal(unet_output(0.0), base)
    assert (unet_output(1.0) - base).abs().max() > 1e-6


@pytest.mark.training
@needs_train_stack
def test_worker_runs_from_a_bare_custom_nodes_copy(trained) -> None:
    output, result, events, pack = trained
    assert result.returncode == 0, result.stderr[-3000:]
    assert events[-1]["event"] == "done" and output.is_file()
    assert f"trainer loaded from {pack / 'training' / 'trainer.py'}" in result.stderr


def start_worker(config: Path, stderr_path: Path) -> subprocess.Popen:
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=quiet_env(),
        )


def read_events_until(proc: subprocess.Popen, event: str) -> list[dict]:
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] in (event, "done", "error"):
            break
    return events


@pytest.mark.training
@needs_train_stack
def test_sigterm_cancels_without_leaving_files(tiny_model: Path, dataset: list[dict], tmp_path: Path) -> None:
    out_dir = tmp_path / "loras"
    out_dir.mkdir()
    config = write_config(tmp_path, **training_fields(tiny_model, dataset, out_dir / "x.safetensors", steps=500))
    proc = start_worker(config, tmp_path / "stderr.txt")
    try:
        events = read_events_until(proc, "progress")
        assert events[-1]["event"] == "progress" and events[-1]["step"] == 1
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert events[-1] == {"event": "cancelled"}, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert proc.returncode == 143
    assert not any(e["event"] == "progress" and e["step"] > 100 for e in events)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_items", "there are no training items"),
        ("unreadable_image", "cannot open 1 of 2 training images"),
        ("existing_output", "output_path already exists"),
        ("single_file", "model.safetensors is not a valid .safetensors file"),
        ("missing_output", "missing the required field 'output_path'"),
    ],
)
def test_bad_config_is_an_error_event(tmp_path: Path, dataset: list[dict], case: str, message: str) -> None:
    model = fake_model_folder(tmp_path / "model")
    output = tmp_path / "out.safetensors"
    fields = training_fields(model, dataset[:2], output)
    if case == "no_items":
        fields["items"] = []
    elif case == "unreadable_image":
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG but not really")
        fields["items"] = [dataset[0], {"image": str(broken), "caption": "x"}]
    elif case == "existing_output":
        output.write_bytes(b"an earlier LoRA")
    elif case == "single_file":
        fields["base_model"] = str(tmp_path / "model.safetensors")
        (tmp_path / "model.safetensors").write_bytes(b"x")
    elif case == "missing_output":  # steps, rank, ... have defaults now; the plumbing has none
        del fields["output_path"]
    result, events = run_worker(write_config(tmp_path, **fields))
    assert result.returncode == 1
    assert len(events) == 1 and events[0]["event"] == "error"
    assert message in events[0]["message"]
    if case == "existing_output":
        assert output.read_bytes() == b"an earlier LoRA"


def test_unusable_config_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    for config, message in [
        (tmp_path / "bad.json", "is not valid JSON"),
        (tmp_path / "absent.json", "config file not found"),
    ]:
        result, events = run_worker(config)
        assert result.returncode == 1 and events[0]["event"] == "error" and message in events[0]["message"]
    result = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "usage" in json.loads(result.stdout)["message"]
