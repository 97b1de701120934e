"""The trainer in-process on tiny SD1.5 / SDXL models (CPU, 64 px, a few steps each)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from lora_studio.training import loop as loop_module  # noqa: E402
from lora_studio.training import run_data as run_data_module  # noqa: E402
from lora_studio.training.config import parse_config  # noqa: E402
from lora_studio.training.errors import TrainingCancelled, TrainingError  # noqa: E402
from lora_studio.training.trainer import train  # noqa: E402
from support.tiny_sd import build_tiny_sd15, build_tiny_sdxl, write_sample_images  # noqa: E402
from support.train_cfg import EventLog, item_dicts, train_fields  # noqa: E402

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "tiny-sd15")


@pytest.fixture(scope="module")
def vpred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "tiny-vpred", prediction_type="v_prediction")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "tiny-sdxl")


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return item_dicts(write_sample_images(tmp_path_factory.mktemp("images"), count=2))


def run(model: Path, items: list[dict], output: Path, **overrides):
    events = EventLog()
    result = train(parse_config(train_fields(model, items, output, **overrides)), on_event=events)
    return result, events


def load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def equal_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_overfitting_lowers_the_loss(arch: str, request: pytest.FixtureRequest, items: list[dict], tmp_path: Path):
    """Same seed, same noise and timesteps: only the learning rate differs, so the losses of the two runs are
    paired, step by step; learning at 1e-3 must beat (practically) not learning. LoCon (conv) adapters and a
    large alpha/rank let the tiny random UNet move within a handful of steps."""
    model = request.getfixturevalue(arch)
    one = items[:1]
    common = {"steps": 10, "rank": 4, "alpha": 32.0, "conv": True}
    learned, events = run(model, one, tmp_path / "learn.safetensors", learning_rate=1e-3, **common)
    frozen, frozen_events = run(model, one, tmp_path / "frozen.safetensors", learning_rate=1e-9, **common)
    losses = [e["loss"] for e in events.of("progress")]
    ratios = [a / b for a, b in zip(losses, [e["loss"] for e in frozen_events.of("progress")], strict=True)]
    late = ratios[5:]
    assert all(r < 1.0 for r in late) and sum(late) / len(late) < 0.985, ratios
    assert events.of("progress")[0]["loss"] == pytest.approx(frozen_events.of("progress")[0]["loss"], rel=1e-6)
    assert learned.arch == frozen.arch == arch
    assert events.of("start") == [{"total_steps": 10, "arch": arch, "resume_step": 0}]
    assert learned.attention == "AttnProcessor2_0"  # PyTorch SDPA
    keys = load(learned.output_path).keys()
    assert all(key.startswith("lora_unet_") for key in keys)
    if arch == "sdxl":
        assert any(key.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for key in keys)


def test_progress_events_and_phases(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    result, events = run(sd15, items, tmp_path / "out.safetensors", steps=3, lr_scheduler="constant_with_warmup",
                         warmup_steps=2)
    names = events.names()
    assert names[0] == "start" and names[-1] == "phase"
    phases = [(e["name"], e["done"], e["total"]) for e in events.of("phase")]
    assert phases[:2] == [("loading", 0, 1), ("loading", 1, 1)]
    assert ("caching", 2, 2) in phases and ("training", 0, 3) in phases and phases[-1] == ("saving", 1, 1)
    progress = events.of("progress")
    assert [e["step"] for e in progress] == [1, 2, 3]
    for e in progress:
        assert set(e) == {"step", "total_steps", "loss", "smooth_loss", "it_s", "eta_s", "lr"}
        assert math.isfinite(e["loss"]) and math.isfinite(e["smooth_loss"]) and e["it_s"] > 0 and e["eta_s"] >= 0
    assert progress[0]["smooth_loss"] == pytest.approx(progress[0]["loss"])
    assert [e["lr"] for e in progress] == pytest.approx([5e-4, 1e-3, 1e-3])  # warm-up
    assert progress[-1]["eta_s"] == 0
    assert result.smooth_loss == pytest.approx(progress[-1]["smooth_loss"])
    assert result.num_modules == 120  # kohya default coverage of the tiny SD1.5: 10 transformers x 12 modules


def test_v_prediction_training_is_reproducible(vpred: Path, items: list[dict], tmp_path: Path) -> None:
    first, events_a = run(vpred, items, tmp_path / "one.safetensors", batch_size=2)
    second, events_b = run(vpred, items, tmp_path / "two.safetensors", batch_size=2)
    assert [e["loss"] for e in events_a.of("progress")] == [e["loss"] for e in events_b.of("progress")]
    assert equal_tensors(load(first.output_path), load(second.output_path))
    assert first.sha256 != second.sha256  # only the timestamps in the header differ
    assert first.rank == 2 and first.alpha == 1.0


def test_min_snr_and_noise_offset_change_the_loss_as_expected(sd15: Path, items: list[dict], tmp_path: Path):
    """Step 1 sees identical weights, noise and timestep in all three runs (batch of one): min-SNR multiplies
    the loss by min(snr, gamma) / snr of that timestep, the noise offset changes the target."""
    import torch
    from diffusers import DDPMScheduler
    from lora_studio.training import optim

    def first_loss(name: str, **overrides) -> float:
        _, events = run(sd15, items[:1], tmp_path / f"{name}.safetensors", steps=1, **overrides)
        return events.of("progress")[0]["loss"]

    plain = first_loss("plain")
    weighted = first_loss("snr", min_snr_gamma=1.0)
    offset = first_loss("offset", noise_offset=0.5)
    scheduler = DDPMScheduler.from_pretrained(str(sd15), subfolder="scheduler")
    weights = optim.min_snr_weights(optim.compute_snr(scheduler.alphas_cumprod, torch.arange(1000)), 1.0, "epsilon")
    ratio = weighted / plain
    assert ratio <= 1.0 + 1e-6
    assert (weights - ratio).abs().min() < 1e-4  # exactly the weight of some timestep
    assert offset != pytest.approx(plain, rel=1e-4)


def test_text_encoder_lora_trains_and_exports_te_keys(sd15: Path, sdxl: Path, items: list[dict], tmp_path: Path):
    for model, prefixes in ((sd15, ("lora_te_",)), (sdxl, ("lora_te1_", "lora_te2_"))):
        samples = tmp_path / model.name / "samples"
        result, events = run(model, items, tmp_path / f"{model.name}.safetensors", train_text_encoder=True,
                             text_encoder_lr=5e-3, shuffle_tags=True, sample_every=2, sample_dir=str(samples),
                             sample_prompt="akane", sample_steps=1)
        tensors = load(result.output_path)
        assert result.text_cache == {}  # trained encoders: never cached
        assert [e["step"] for e in events.of("sample")] == [2]  # the prompt goes through the LoRA'd encoders
        assert result.samples[0].is_file()
        for prefix in prefixes:
            ups = {k: v for k, v in tensors.items() if k.startswith(prefix) and k.endswith(".lora_up.weight")}
            layers = {int(re.search(r"_layers_(\d+)_", k)[1]) for k in ups}
            assert len(layers) >= 2, prefix
            # lora_up starts at zero, so non-zero = trained. SDXL conditions on the penultimate layer of
            # CLIP-L: its last layer gets no gradient (as in kohya); every other layer must have learned.
            last = max(layers) if prefix == "lora_te1_" else None
            untrained = [k for k, v in ups.items() if v.abs().max() == 0 and f"_layers_{last}_" not in k]
            assert not untrained, untrained
        unet_modules = sum(1 for k in tensors if k.startswith("lora_unet_") and k.endswith(".alpha"))
        assert result.num_modules > unet_modules


def test_latent_and_text_caches_hit_on_a_second_run(sd15: Path, items: list[dict], tmp_path: Path, monkeypatch):
    freed: list[tuple] = []
    original_run = loop_module.TrainLoop.run

    def run_loop(self, after_step):  # what is still loaded when the training loop starts
        freed.append((self.base.vae, tuple(self.base.text_encoders)))
        return original_run(self, after_step)

    monkeypatch.setattr(loop_module.TrainLoop, "run", run_loop)
    cache = tmp_path / "cache"
    first, _ = run(sd15, items, tmp_path / "a.safetensors", flip=True, cache_dir=str(cache))
    assert freed == [(None, (None,))]  # latents and captions cached: VAE and text encoder released
    assert first.latent_cache == {"hits": 0, "misses": 4}  # 2 images x both orientations
    assert first.text_cache["misses"] == 2
    second, events = run(sd15, items, tmp_path / "b.safetensors", flip=True, cache_dir=str(cache))
    assert second.latent_cache == {"hits": 4, "misses": 0}  # the VAE encoded nothing
    assert second.text_cache["misses"] == 0
    assert ("caching", 4, 4) in [(e["name"], e["done"], e["total"]) for e in events.of("phase")]
    assert equal_tensors(load(first.output_path), load(second.output_path))


def test_the_disk_cache_is_pruned_to_its_budget_keeping_the_run_s_own_entries(sd15: Path, items: list[dict],
                                                                               tmp_path: Path, monkeypatch) -> None:
    """LORA_STUDIO_CACHE_MAX_MB: once a run has cached its latents and captions, older entries of other datasets
    go (least recently used first); the run's own stay, even over the budget, and it trains from them."""
    cache = tmp_path / "cache"
    run(sd15, items[:1], tmp_path / "a.safetensors", cache_dir=str(cache))
    first_files = set((cache).rglob("*.safetensors"))
    assert len(first_files) == 2  # one latent, one caption
    monkeypatch.setattr(run_data_module, "CACHE_MAX_BYTES", 1)
    second, _ = run(sd15, items[1:], tmp_path / "b.safetensors", cache_dir=str(cache))
    left = set(cache.rglob("*.safetensors"))
    assert len(left) == 2 and not left & first_files  # the first dataset's entries were removed
    assert second.latent_cache == {"hits": 0, "misses": 1}
    again, _ = run(sd15, items[1:], tmp_path / "c.safetensors", cache_dir=str(cache))
    assert again.latent_cache == {"hits": 1, "misses": 0}  # the kept entries are used as they are
    assert set(cache.rglob("*.safetensors")) == left


def test_gradient_checkpointing_and_accumulation(sd15: Path, items: list[dict], tmp_path: Path, monkeypatch):
    import torch.utils.checkpoint

    plain, _ = run(sd15, items, tmp_path / "plain.safetensors", steps=2, grad_accum=2)
    calls: list[int] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    micro: list[int] = []
    original_micro = loop_module.TrainLoop.micro_step
    monkeypatch.setattr(
        loop_module.TrainLoop, "micro_step", lambda self, b: micro.append(len(b)) or original_micro(self, b)
    )
    checkpointed, _ = run(sd15, items, tmp_path / "ckpt.safetensors", steps=2, grad_accum=2,
                          gradient_checkpointing=True)
    assert calls, "gradient checkpointing was not used"
    assert micro == [1, 1, 1, 1]  # 2 optimizer steps x 2 accumulated micro-batches
    a, b = load(plain.output_path), load(checkpointed.output_path)
    assert a.keys() == b.keys() and all(a[k].allclose(b[k], atol=1e-6) for k in a)


def test_conv_lora_uses_its_own_rank(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    result, _ = run(sd15, items, tmp_path / "conv.safetensors", steps=1, conv=True, conv_rank=3, conv_alpha=1.5)
    tensors = load(result.output_path)
    convs = [k for k, v in tensors.items() if k.endswith(".lora_down.weight") and v.dim() == 4 and v.shape[-1] == 3]
    assert convs and all(tensors[k].shape[0] == 3 for k in convs)
    assert all(tensors[k.replace(".lora_down.weight", ".alpha")].item() == 1.5 for k in convs)
    assert result.num_modules > 120


def test_samples_are_rendered_and_reported(sdxl: Path, items: list[dict], tmp_path: Path) -> None:
    from PIL import Image

    samples = tmp_path / "job" / "samples"
    result, events = run(sdxl, items, tmp_path / "s.safetensors", steps=2, sample_every=1, sample_dir=str(samples),
                         sample_prompt="akane, smile", sample_steps=2, sample_size=64)
    reported = events.of("sample")
    assert [e["step"] for e in reported] == [1, 2]
    assert all(e["prompt"] == "akane, smile" for e in reported)
    paths = [Path(e["path"]) for e in reported]
    assert paths == list(result.samples) and all(p.parent == samples for p in paths)
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (64, 64)
    assert sorted(p.name for p in samples.iterdir()) == [p.name for p in paths]  # no temp files left


def test_stop_request_during_training_saves_nothing(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    out_dir = tmp_path / "loras"
    events = EventLog(stop_after=("progress", 2))
    config = parse_config(train_fields(sd15, items, out_dir / "never.safetensors", steps=50))
    with pytest.raises(TrainingCancelled):
        train(config, on_event=events, should_stop=events.should_stop)
    assert [e["step"] for e in events.of("progress")] == [1, 2]
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_stop_request_before_loading_touches_nothing(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    """A SIGTERM while torch imports or the model loads: cancelled before anything is loaded or written."""
    events = EventLog()
    config = parse_config(train_fields(sd15, items, tmp_path / "loras" / "never.safetensors"))
    with pytest.raises(TrainingCancelled):
        train(config, on_event=events, should_stop=lambda: True)
    assert events.events == [] and not (tmp_path / "loras").exists()


def test_unmatched_target_modules_are_an_error(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no UNet module matches target_modules"):
        run(sd15, items, tmp_path / "x.safetensors", target_modules=["not_a_layer"])


def test_latents_beyond_the_memory_budget_are_read_from_the_disk_cache(
    sd15: Path, items: list[dict], tmp_path: Path, monkeypatch
) -> None:
    """A dataset whose latents do not fit the RAM budget trains from the on-disk cache, to the same result."""
    common = {"steps": 3, "flip": True, "shuffle_tags": True, "cache_dir": str(tmp_path / "cache")}
    in_memory, _ = run(sd15, items, tmp_path / "memory.safetensors", **common)
    monkeypatch.setattr(run_data_module, "LATENTS_IN_MEMORY_MB", 0)
    from_disk, _ = run(sd15, items, tmp_path / "disk.safetensors", **common)
    assert in_memory.latents_in_memory and not from_disk.latents_in_memory
    assert from_disk.latent_cache == {"hits": 4, "misses": 0}  # the caching phase: all on disk already
    assert equal_tensors(load(tmp_path / "memory.safetensors"), load(tmp_path / "disk.safetensors"))


# A cold Inductor compile of the UNet's forward and backward takes minutes on a 2-core CPU (measured 170-256 s
# before, over 300 s when the other test worker is busy too; ~40 s with a warm cache): a longer limit than
# the suite's 300 s, still a bound.
@pytest.mark.timeout(900)
def test_compiled_unet_trains_like_the_plain_one(sd15: Path, items: list[dict], tmp_path: Path) -> None:
    """``compile``: the UNet step runs through torch.compile (Inductor, real C++ kernels on the CPU), reports a
    'compiling' phase around the first step, and learns what the plain UNet learns. Inductor reorders float
    maths (gradients differ by ~4e-4 relative here) and Adam's first steps move each weight by +-lr whatever
    the gradient's size, so the small gradients can flip: the learned deltas agree in direction, not bit for bit.
    """
    import torch
    from torch._dynamo.utils import counters

    lr = 1e-4
    fp32 = {"mixed_precision": "no"}  # the tolerances below are fp32's (bf16 autocast: see the bf16 test)
    plain, plain_events = run(sd15, items, tmp_path / "plain.safetensors", steps=2, learning_rate=lr, **fp32)
    graphs = counters["stats"]["unique_graphs"]
    compiled, events = run(sd15, items, tmp_path / "compiled.safetensors", steps=2, learning_rate=lr, compile=True,
                           **fp32)
    assert counters["stats"]["unique_graphs"] > graphs, "torch.compile traced nothing"
    assert compiled.compiled and not plain.compiled
    assert [(e["name"], e["done"]) for e in events.of("phase") if e["name"] == "compiling"] == [
        ("compiling", 0), ("compiling", 1)]
    progress = events.of("progress")
    assert "it_s" not in progress[0] and progress[1]["it_s"] > 0  # speed counts from the step after the compile
    plain_losses = [e["loss"] for e in plain_events.of("progress")]
    assert progress[0]["loss"] == pytest.approx(plain_losses[0], rel=1e-5)  # the same forward pass
    assert [e["loss"] for e in progress] == pytest.approx(plain_losses, rel=5e-3)
    a, b = load(plain.output_path), load(compiled.output_path)
    assert a.keys() == b.keys()
    ups = [k for k in a if k.endswith(".lora_up.weight")]  # zero at the start: what was learned
    learned_plain = torch.cat([a[k].flatten() for k in ups])
    learned_compiled = torch.cat([b[k].flatten() for k in ups])
    assert learned_compiled.abs().max() > lr, "the compiled run did not learn"
    assert torch.nn.functional.cosine_similarity(learned_plain, learned_compiled, dim=0) > 0.8
    assert not events.of("warning")


def test_a_failing_compile_falls_back_to_the_plain_unet(sd15: Path, items: list[dict], tmp_path: Path, monkeypatch):
    """No working compiler (or an unsupported op): a warning, then the same step redone without torch.compile
    from the same random state, so the result is the plain run's. Here the failure comes in the second
    accumulated micro-batch, after the first one's backward already ran."""
    import torch
    from torch._dynamo.exc import BackendCompilerFailed

    calls: list[int] = []

    def broken_compile(model, **_kwargs):
        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise BackendCompilerFailed(broken_compile, RuntimeError("no working C++ compiler"), None)
            return model(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    plain, _ = run(sd15, items, tmp_path / "plain.safetensors", steps=2, grad_accum=2)
    fallback, events = run(sd15, items, tmp_path / "fallback.safetensors", steps=2, grad_accum=2, compile=True)
    assert len(calls) == 2
    assert not fallback.compiled
    warnings = events.of("warning")
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0]["message"]
    assert equal_tensors(load(plain.output_path), load(fallback.output_path))


def test_bf16_on_a_cpu_learns_what_fp32_learns(sd15: Path, items: list[dict], tmp_path: Path, monkeypatch) -> None:
    """On a CPU that computes bf16 natively, the default precision trains under bf16 autocast with the frozen
    model in bf16 and the UNet channels-last. Same seed, so the same noise and timesteps: the bf16 run's losses
    follow the fp32 run's step by step and it learns as much (paired against a run that does not learn, as in
    the overfitting test). The weights agree in direction only loosely: Adam's first steps move each weight by
    +-lr whatever its gradient's size, and bf16 flips the sign of the smallest gradients."""
    from lora_studio.training import optim

    if not optim.cpu_has_bf16():
        pytest.skip("this CPU has no native bf16: the default runs in fp32 here")
    import torch
    from lora_studio.training import trainer as trainer_module

    layouts = []
    add_lora = trainer_module.add_lora

    def spy(ctx, base, arch):
        lora = add_lora(ctx, base, arch)
        layouts.append(base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last))
        return lora

    monkeypatch.setattr(trainer_module, "add_lora", spy)
    one = items[:1]
    common = {"steps": 10, "rank": 4, "alpha": 32.0, "conv": True}
    half, half_events = run(sd15, one, tmp_path / "bf16.safetensors", learning_rate=1e-3, **common)  # the default
    full, full_events = run(sd15, one, tmp_path / "fp32.safetensors", learning_rate=1e-3, mixed_precision="no",
                            **common)
    _, frozen_events = run(sd15, one, tmp_path / "frozen.safetensors", learning_rate=1e-9, **common)
    assert (half.precision, full.precision) == ("bf16", "no")
    assert layouts == [True, False, True]  # NHWC for oneDNN's bf16 kernels; fp32 stays NCHW (faster there)
    half_losses = [e["loss"] for e in half_events.of("progress")]
    full_losses = [e["loss"] for e in full_events.of("progress")]
    frozen_losses = [e["loss"] for e in frozen_events.of("progress")]
    assert half_losses != full_losses  # bf16 really ran
    assert half_losses == pytest.approx(full_losses, rel=0.03)
    learned = [a / b for a, b in zip(half_losses, frozen_losses, strict=True)][5:]
    assert all(r < 1.0 for r in learned) and sum(learned) / len(learned) < 0.985, learned
    a, b = load(half.output_path), load(full.output_path)
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype for k in a)
    ups = [k for k in a if k.endswith("lora_up.weight")]
    same = torch.nn.functional.cosine_similarity(torch.cat([a[k].float().flatten() for k in ups]),
                                                 torch.cat([b[k].float().flatten() for k in ups]), dim=0)
    assert same > 0.3, float(same)
