"""`python -m lora_studio train`: a real tiny run in a subprocess (the character's job, recorded
like the panel's), Ctrl-C cancelling it, a worker config run directly, and bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.train_cfg import add_approved_images


@pytest.fixture
def data(tmp_path):
    """A data folder with project 'moon', character 'aiko' and two approved images (SQLite)."""
    from lora_studio.app import EventHub, standalone_host
    from lora_studio.core.settings import load_settings
    from lora_studio.studio import Studio

    settings = load_settings(cli={"data_dir": tmp_path / "data", "models_dir": tmp_path / "models",
                                  "loras_dir": tmp_path / "loras", "min_approved_images": 2}, env={})
    s = Studio(settings, standalone_host(settings, EventHub()))
    try:
        project = s.projects.create("Moon")
        char = s.characters.create(project.id, "Aiko", trigger_word="aikotnk")
        add_approved_images(s, char.id, tmp_path, count=2, seed=500)
    finally:
        s.close()
    return settings


def cli(settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "lora_studio", "train", *args, "--data", str(settings.data_dir),
            "--models-dir", str(settings.effective_models_dir), "--loras-dir", str(settings.effective_loras_dir)]


def env() -> dict:
    return {**os.environ, "LORA_STUDIO_MIN_APPROVED_IMAGES": "2", "OMP_NUM_THREADS": "1"}


def loras_of(settings) -> list:
    from lora_studio.app import EventHub, standalone_host
    from lora_studio.studio import Studio

    s = Studio(settings, standalone_host(settings, EventHub()))
    try:
        return s.training.loras(s.characters.find("moon", "aiko").id).items
    finally:
        s.close()


def test_bad_arguments_exit_2(data, tmp_path):
    run = subprocess.run(cli(data, "--character", "aiko", "--base-model", "x"), capture_output=True, text=True,
                         env=env(), timeout=120)
    assert run.returncode == 2 and "<project>/<character>" in run.stderr
    run = subprocess.run([sys.executable, "-m", "lora_studio", "train", "--config", str(tmp_path / "none.json")],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert run.returncode == 2 and "no config file" in run.stderr
    run = subprocess.run(cli(data, "--character", "moon/aiko", "--base-model", "missing"), capture_output=True,
                         text=True, env=env(), timeout=120)
    assert run.returncode == 1 and "base model 'missing' was not found" in run.stderr


@pytest.mark.training
def test_train_a_character_in_the_foreground(data):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(data.effective_models_dir / "tiny")
    run = subprocess.run(cli(data, "--character", "moon/aiko", "--base-model", "tiny", "--steps", "4", "--rank", "4",
                             "--resolution", str(TINY_RESOLUTION), "--sample-every", "0", "--device", "cpu"),
                         capture_output=True, text=True, env=env(), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step 4/4" in run.stdout and "wrote moon-aiko-v1.safetensors" in run.stdout
    assert (data.effective_loras_dir / "moon-aiko-v1.safetensors").is_file()
    assert [lora.file_name for lora in loras_of(data)] == ["moon-aiko-v1.safetensors"]


@pytest.mark.training
def test_ctrl_c_cancels_and_exits_1(data):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    model = build_tiny_sd15(data.data_dir.parent / "elsewhere" / "tiny")  # a path, not a listed name
    proc = subprocess.Popen(cli(data, "--character", "moon/aiko", "--base-model", str(model), "--steps", "5000",
                                "--rank", "4", "--resolution", str(TINY_RESOLUTION), "--sample-every", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step ") and not line.startswith("step 0/"):
            break
        assert time.monotonic() < deadline, lines
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (lines, out, err[-3000:])
    assert "training cancelled" in err
    assert not data.effective_loras_dir.exists() or list(data.effective_loras_dir.iterdir()) == []
    assert loras_of(data) == []


@pytest.mark.training
def test_run_a_worker_config_directly(tmp_path):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15, write_sample_images

    model = build_tiny_sd15(tmp_path / "tiny")
    images = write_sample_images(tmp_path / "images", 2)
    config = {"base_model": str(model), "items": [{"image": str(p), "caption": "a girl"} for p in images],
              "output_path": str(tmp_path / "out" / "lora.safetensors"), "steps": 3, "rank": 4, "alpha": 2.0,
              "learning_rate": 1e-4, "resolution": TINY_RESOLUTION}
    (tmp_path / "job.json").write_text(json.dumps(config))
    run = subprocess.run([sys.executable, "-m", "lora_studio", "train", "--config", str(tmp_path / "job.json")],
                         capture_output=True, text=True, env=env(), timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step 3/3" in run.stdout and f"wrote {tmp_path / 'out' / 'lora.safetensors'}" in run.stdout
    assert (tmp_path / "out" / "lora.safetensors").is_file()
    bad = {**config, "steps": 0, "output_path": str(tmp_path / "out" / "other.safetensors")}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    run = subprocess.run([sys.executable, "-m", "lora_studio", "train", "--config", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, env=env(), timeout=600)
    assert run.returncode == 1 and "steps" in run.stderr
    assert not Path(bad["output_path"]).exists()


# A stand-in worker: records the environment it was started with next to its config, then reports a LoRA.
RECORDING_WORKER = """
import json, os, sys
from pathlib import Path

config_path = Path(sys.argv[1])
config = json.loads(config_path.read_text())
keys = ("TORCHINDUCTOR_CACHE_DIR", "LORA_STUDIO_CLIP_TOKENIZER", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED")
(config_path.parent / "env.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
out = Path(config["output_path"])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_bytes(b"lora")
print(json.dumps({"event": "start", "total_steps": config["steps"]}))
print(json.dumps({"event": "done", "output_path": str(out), "sha256": "0" * 64, "rank": 4, "alpha": 2.0}))
"""


def test_a_config_run_gets_the_same_worker_environment_as_a_job(data, tmp_path, monkeypatch):
    """`train --config` and a character's job start the worker the same way: Inductor's cache in the data folder
    (even when this process's environment points elsewhere) and the host's ComfyUI tokenizer."""
    import dataclasses

    from lora_studio import __main__ as entry
    from lora_studio import app
    from lora_studio.training import service, worker_client

    worker = tmp_path / "recording_worker.py"
    worker.write_text(RECORDING_WORKER)
    monkeypatch.setattr(worker_client, "WORKER", worker)
    monkeypatch.setattr(service, "missing_train_deps", lambda: [])  # the stand-in needs no torch
    tokenizer = tmp_path / "ComfyUI" / "comfy" / "sd1_tokenizer"
    real_host = app.standalone_host
    monkeypatch.setattr(app, "standalone_host",
                        lambda settings, hub: dataclasses.replace(real_host(settings, hub), clip_tokenizer_dir=tokenizer))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")  # what Inductor leaves behind
    monkeypatch.delenv("LORA_STUDIO_CLIP_TOKENIZER", raising=False)
    monkeypatch.setenv("LORA_STUDIO_MIN_APPROVED_IMAGES", "2")
    for sub, (name, config) in {"": ("model_index.json", {"_class_name": "StableDiffusionPipeline"}),
                                "unet": ("config.json", {"in_channels": 4, "cross_attention_dim": 768}),
                                "text_encoder": ("config.json", {"hidden_size": 768})}.items():
        (data.effective_models_dir / "sd15" / sub).mkdir(parents=True, exist_ok=True)
        (data.effective_models_dir / "sd15" / sub / name).write_text(json.dumps(config))
    folders = ["--data", str(data.data_dir), "--models-dir", str(data.effective_models_dir),
               "--loras-dir", str(data.effective_loras_dir)]

    assert entry.main(["train", "--character", "moon/aiko", "--base-model", "sd15", "--steps", "2", *folders]) == 0
    [job_env_file] = (data.data_dir / "jobs").glob("*/env.json")
    assert [lora.file_name for lora in loras_of(data)] == ["moon-aiko-v1.safetensors"]

    config = tmp_path / "run" / "job.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"output_path": str(tmp_path / "run" / "lora.safetensors"), "steps": 2}))
    assert entry.main(["train", "--config", str(config), *folders]) == 0
    cli_env = json.loads((config.parent / "env.json").read_text())

    assert cli_env == json.loads(job_env_file.read_text())
    assert cli_env == {"TORCHINDUCTOR_CACHE_DIR": str(data.data_dir / "cache" / "latents" / "torch_compile"),
                       "LORA_STUDIO_CLIP_TOKENIZER": str(tokenizer), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
