"""Checkpoints: an interrupted run resumed from its last checkpoint ends bit-identical to an uninterrupted one;
checkpoint writes are atomic and a killed write leaves the previous checkpoint usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from lora_studio.training.checkpoints import find_checkpoint, list_checkpoints, write_checkpoint_atomic  # noqa: E402
from lora_studio.training.config import parse_config  # noqa: E402
from lora_studio.training.errors import TrainingCancelled, TrainingError  # noqa: E402
from lora_studio.training.trainer import train  # noqa: E402
from support.tiny_sd import build_tiny_sd15, write_sample_images  # noqa: E402
from support.train_cfg import EventLog, item_dicts, train_fields  # noqa: E402

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "tiny-sd15")


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    captions = ["1girl, red hair, smile, outdoors", "1girl, red hair, from side, night", "1girl, sitting, chair"]
    return item_dicts(write_sample_images(tmp_path_factory.mktemp("images"), count=3), captions)


def fields(model: Path, items: list[dict], output: Path, checkpoints: Path, **overrides) -> dict:
    """Every random source on: shuffled captions with tag dropout, flips, buckets, cosine with warm-up."""
    options = dict(
        steps=6, checkpoint_dir=str(checkpoints), checkpoint_every=3, shuffle_tags=True, tag_dropout=0.2, flip=True,
        lr_scheduler="cosine", warmup_steps=2, noise_offset=0.05, min_snr_gamma=5, trigger_word="akane",
    )
    return train_fields(model, items, output, **{**options, **overrides})


def load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_from_the_last_checkpoint_equals_an_uninterrupted_run(sd15: Path, items: list[dict], tmp_path: Path):
    full = EventLog()
    result = train(parse_config(fields(sd15, items, tmp_path / "full.safetensors", tmp_path / "ckpt-full")), full)

    # the same run, cancelled right after its step-3 checkpoint ...
    first = EventLog(stop_after=("checkpoint", 3))
    config = parse_config(fields(sd15, items, tmp_path / "resumed.safetensors", tmp_path / "ckpt"))
    with pytest.raises(TrainingCancelled):
        train(config, first, should_stop=first.should_stop)
    assert [e["step"] for e in first.of("progress")] == [1, 2, 3]
    assert first.of("checkpoint") == [{"step": 3, "path": str(tmp_path / "ckpt" / "step-3")}]
    assert not (tmp_path / "resumed.safetensors").exists()

    # ... and resumed by a new call from the checkpoint folder (its latest checkpoint is picked); the temp
    # folder of a checkpoint write killed later on is ignored, then cleaned up
    stray = tmp_path / "ckpt" / ".step-6.0badf00d.tmp"
    stray.mkdir()
    (stray / "checkpoint.json").write_text('{"format": 1, "step": 6}')
    second = EventLog()
    resumed_config = parse_config(
        fields(sd15, items, tmp_path / "resumed.safetensors", tmp_path / "ckpt", resume_from=str(tmp_path / "ckpt"))
    )
    resumed = train(resumed_config, second)
    assert second.of("start") == [{"total_steps": 6, "arch": "sd15", "resume_step": 3}]
    assert [e["step"] for e in second.of("progress")] == [4, 5, 6]
    assert [e["loss"] for e in second.of("progress")] == [e["loss"] for e in full.of("progress")][3:]
    assert [e["smooth_loss"] for e in second.of("progress")] == [e["smooth_loss"] for e in full.of("progress")][3:]
    assert [e["lr"] for e in second.of("progress")] == [e["lr"] for e in full.of("progress")][3:]
    a, b = load(result.output_path), load(resumed.output_path)
    assert a.keys() == b.keys() and all(a[key].equal(b[key]) for key in a)
    assert resumed.resumed_from == 3 and resumed.smooth_loss == result.smooth_loss
    assert not stray.exists()

    # the checkpoint holds everything: adapters, a loadable kohya LoRA, optimizer/scheduler/RNG/sampler state
    checkpoint = tmp_path / "ckpt" / "step-3"
    assert {p.name for p in checkpoint.iterdir()} == {"adapters.safetensors", "lora.safetensors", "state.pt",
                                                      "checkpoint.json"}
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    assert meta["step"] == 3 and meta["signature"]["arch"] == "sd15"
    assert any(key.startswith("lora_unet_") for key in load(checkpoint / "lora.safetensors"))


def test_resume_with_8bit_adamw_equals_an_uninterrupted_run(sd15: Path, items: list[dict], tmp_path: Path):
    """bitsandbytes' AdamW8bit (its CPU kernels): rank 128 makes the tiny model's LoRA tensors 4096+ elements,
    so their moments are 8-bit blockwise; the checkpoint saves and restores that state exactly."""
    pytest.importorskip("bitsandbytes")
    import torch

    options = {"optimizer": "adamw8bit", "rank": 128, "alpha": 64.0, "steps": 4, "checkpoint_every": 2}
    full = EventLog()
    result = train(parse_config(fields(sd15, items, tmp_path / "full.safetensors", tmp_path / "c1", **options)), full)
    first = EventLog(stop_after=("checkpoint", 2))
    with pytest.raises(TrainingCancelled):
        train(parse_config(fields(sd15, items, tmp_path / "r.safetensors", tmp_path / "c2", **options)), first,
              should_stop=first.should_stop)
    state = torch.load(tmp_path / "c2" / "step-2" / "state.pt", weights_only=True)
    moments = [s["__bnb_optimizer_quant_state__"]["state1"] for s in state["optimizer"]["state"].values()]
    assert any(m.dtype == torch.uint8 for m in moments), "no 8-bit optimizer state was saved"
    resumed = train(parse_config(fields(sd15, items, tmp_path / "r.safetensors", tmp_path / "c2",
                                        resume_from=str(tmp_path / "c2"), **options)), EventLog())
    assert resumed.optimizer == result.optimizer == "AdamW8bit"
    a, b = load(result.output_path), load(resumed.output_path)
    assert a.keys() == b.keys() and all(a[key].equal(b[key]) for key in a)


def test_resume_refuses_changed_settings(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    events = EventLog(stop_after=("checkpoint", 3))
    with pytest.raises(TrainingCancelled):
        train(parse_config(fields(sd15, items, tmp_path / "a.safetensors", ckpt, steps=4)), events, events.should_stop)
    changed = parse_config(fields(sd15, items, tmp_path / "b.safetensors", ckpt, rank=3, resume_from=str(ckpt)))
    with pytest.raises(TrainingError, match=r"the settings changed \(conv_rank 2 -> 3, rank 2 -> 3\)"):
        train(changed, EventLog())
    done = parse_config(fields(sd15, items, tmp_path / "c.safetensors", ckpt, steps=3, resume_from=str(ckpt)))
    with pytest.raises(TrainingError, match="checkpoint is at step 3 of 3"):
        train(done, EventLog())
    assert not any(tmp_path.glob("[bc].safetensors"))


def write_files(step: int):
    def write(folder: Path) -> None:
        (folder / "state.pt").write_bytes(b"state %d" % step)
        (folder / "checkpoint.json").write_text(json.dumps({"format": 1, "step": step}))

    return write


def test_checkpoint_writes_are_atomic_and_keep_the_last_two(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    for step in (2, 4, 6):
        write_checkpoint_atomic(root, step, write_files(step))
    assert [c.step for c in list_checkpoints(root)] == [4, 6]
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]

    def killed(folder: Path) -> None:  # dies half-way through writing step 8
        (folder / "state.pt").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint_atomic(root, 8, killed)
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]
    assert find_checkpoint(root).step == 6

    # a hard kill (no cleanup at all) leaves a hidden temp folder: it is never taken for a checkpoint
    stray = root / ".step-8.deadbeef.tmp"
    stray.mkdir()
    write_files(8)(stray)
    assert find_checkpoint(root).step == 6 and find_checkpoint(root / "step-4").step == 4
    with pytest.raises(TrainingError, match="no usable checkpoint"):
        find_checkpoint(tmp_path / "empty")
