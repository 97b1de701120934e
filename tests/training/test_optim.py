"""The optimisation helpers with known values: SNR, min-SNR weights, noise offset, targets, schedules, optimizers."""

from __future__ import annotations

import logging
import math
import sys
import types

import pytest

torch = pytest.importorskip("torch")

from lora_studio.training import optim  # noqa: E402
from lora_studio.training.errors import TrainingError  # noqa: E402


def test_snr_from_alphas_cumprod() -> None:
    alphas = torch.tensor([0.5, 0.8, 0.2, 0.99])
    snr = optim.compute_snr(alphas, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(snr, torch.tensor([1.0, 4.0, 0.25, 99.0]), rtol=1e-5)
    assert snr.dtype == torch.float32


def test_min_snr_weights_epsilon_and_v_prediction() -> None:
    snr = torch.tensor([1.0, 4.0, 0.25, 9.0])
    eps = optim.min_snr_weights(snr, 2.0, "epsilon")  # min(snr, 2) / snr
    assert torch.allclose(eps, torch.tensor([1.0, 0.5, 1.0, 2.0 / 9.0]))
    v = optim.min_snr_weights(snr, 2.0, "v_prediction")  # min(snr, 2) / (snr + 1)
    assert torch.allclose(v, torch.tensor([0.5, 0.4, 0.2, 0.2]))
    assert torch.equal(optim.min_snr_weights(snr, 0.0, "epsilon"), torch.ones(4))
    with pytest.raises(TrainingError, match="prediction_type"):
        optim.min_snr_weights(snr, 5.0, "sample")


def test_noise_offset_adds_a_per_channel_constant() -> None:
    plain = optim.sample_noise((2, 4, 8, 8), torch.Generator().manual_seed(3))
    offset = optim.sample_noise((2, 4, 8, 8), torch.Generator().manual_seed(3), noise_offset=0.1)
    diff = offset - plain  # same generator: the first draw is identical, the offset comes on top
    assert diff.abs().max() > 0
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff))  # constant over each (sample, channel)
    assert diff[:, :, 0, 0].abs().max() < 0.1 * 5
    assert torch.equal(plain, optim.sample_noise((2, 4, 8, 8), torch.Generator().manual_seed(3), 0.0))


def test_training_targets() -> None:
    from diffusers import DDPMScheduler

    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    eps = DDPMScheduler(prediction_type="epsilon")
    assert optim.training_target(eps, latents, noise, timesteps) is noise
    vpred = DDPMScheduler(prediction_type="v_prediction")
    abar = vpred.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = abar.sqrt() * noise - (1 - abar).sqrt() * latents
    assert torch.allclose(optim.training_target(vpred, latents, noise, timesteps), expected, atol=1e-6)
    with pytest.raises(TrainingError, match="prediction_type"):
        optim.training_target(DDPMScheduler(prediction_type="sample"), latents, noise, timesteps)


def test_weighted_mse() -> None:
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    assert optim.weighted_mse(pred, target).item() == pytest.approx((1 + 4) / 2)
    assert optim.weighted_mse(pred, target, torch.tensor([1.0, 0.25])).item() == pytest.approx((1 + 1) / 2)


def test_learning_rate_schedules() -> None:
    warm = optim.lr_lambda("constant_with_warmup", total_steps=10, warmup_steps=4)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [optim.lr_lambda("constant", 10, warmup_steps=4)(s) for s in range(3)] == [1.0, 1.0, 1.0]
    cosine = optim.lr_lambda("cosine", total_steps=10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert all(cosine(s) > cosine(s + 1) for s in range(9))
    warm_cosine = optim.lr_lambda("cosine", total_steps=10, warmup_steps=2)
    assert [warm_cosine(s) for s in range(3)] == [0.5, 1.0, 1.0]
    assert warm_cosine(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    with pytest.raises(TrainingError, match="lr_scheduler must be one of"):
        optim.lr_lambda("linear", 10)


def test_scheduler_drives_the_optimizer_learning_rate() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = optim.make_optimizer([optim.ParamGroup("unet", [param], 1e-3)], "adamw", device_type="cpu")
    sched = optim.make_scheduler(opt, "constant_with_warmup", total_steps=5, warmup_steps=2)
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3])


def test_param_groups_and_8bit_fallback_without_bitsandbytes(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(optim, "bitsandbytes_available", lambda: False)
    unet, te = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    groups = [optim.ParamGroup("unet", [unet], 1e-4), optim.ParamGroup("te0", [te], 5e-5)]
    with caplog.at_level(logging.WARNING, logger="lora_studio.training.optim"):
        opt = optim.make_optimizer(groups, "adamw8bit", device_type="cpu")
    assert type(opt) is torch.optim.AdamW
    assert "8-bit AdamW requested but bitsandbytes is not installed" in caplog.text
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("unet", 1e-4), ("te0", 5e-5)]
    with pytest.raises(TrainingError, match="nothing to train"):
        optim.make_optimizer([optim.ParamGroup("unet", [], 1e-4)], "adamw", device_type="cpu")


def test_8bit_fallback_when_bitsandbytes_cannot_step(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """An install without kernels for this device (an old release on a CPU, missing CUDA libraries) fails the
    probe step at setup: plain AdamW, and the warning says why."""

    class Broken:
        def __init__(self, params, **kwargs):
            pass

        def step(self):
            raise RuntimeError("no kernel registered for device cpu")

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=Broken)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    monkeypatch.setattr(optim, "bitsandbytes_available", lambda: True)
    with caplog.at_level(logging.WARNING, logger="lora_studio.training.optim"):
        opt = optim.make_optimizer([optim.ParamGroup("unet", [torch.nn.Parameter(torch.zeros(2))], 1e-4)],
                                   "adamw8bit", device_type="cpu")
    assert type(opt) is torch.optim.AdamW
    assert "cannot run it on cpu (RuntimeError: no kernel registered for device cpu)" in caplog.text


def test_8bit_adamw_from_bitsandbytes_tracks_adamw() -> None:
    """The real bitsandbytes (a test dependency; CPU kernels since 0.50): 8-bit state for a LoRA-sized tensor,
    32-bit below 4096 elements, and updates that follow torch's AdamW within the quantisation error."""
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    big, small = torch.randn(16, 320), torch.randn(4, 8)  # a rank-16 lora_A of a 320-wide layer; a tiny one
    ours = [torch.nn.Parameter(big.clone()), torch.nn.Parameter(small.clone())]
    ref = [torch.nn.Parameter(big.clone()), torch.nn.Parameter(small.clone())]
    opt = optim.make_optimizer([optim.ParamGroup("unet", ours, 1e-3)], "adamw8bit", device_type="cpu")
    assert isinstance(opt, bnb.optim.AdamW8bit)
    reference = torch.optim.AdamW([{"params": ref, "lr": 1e-3}], weight_decay=1e-2)
    for step in range(20):
        grads = [torch.randn_like(p) * (1 + step % 3) for p in ours]
        for p, r, g in zip(ours, ref, grads, strict=True):
            p.grad, r.grad = g.clone(), g.clone()
        opt.step()
        reference.step()
    assert opt.state[ours[0]]["state1"].dtype == torch.uint8  # 8-bit moments
    assert opt.state[ours[1]]["state1"].dtype == torch.float32
    for p, r, start in zip(ours, ref, (big, small), strict=True):
        moved_ours, moved_ref = (p.detach() - start).flatten(), (r.detach() - start).flatten()
        assert moved_ref.abs().mean() > 2e-3  # 20 steps at lr 1e-3 (random gradients) moved the weights
        assert torch.nn.functional.cosine_similarity(moved_ours, moved_ref, dim=0) > 0.98
        assert (moved_ours - moved_ref).abs().max() < 0.25 * moved_ref.abs().max()


def test_precision_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(optim, "cpu_has_bf16", lambda: False)
    for requested in ("bf16", "fp16", "no"):
        precision = optim.resolve_precision(requested, cpu)
        assert precision.mode == "no" and precision.weight_dtype == torch.float32
        assert precision.autocast_dtype is None and not precision.use_scaler
    monkeypatch.setattr(optim, "cpu_has_bf16", lambda: True)
    for requested in ("bf16", "fp16"):  # CPUs have no fast fp16: bf16 (no loss scaling: bf16 has fp32's range)
        precision = optim.resolve_precision(requested, cpu)
        assert precision.mode == "bf16" and precision.weight_dtype == torch.bfloat16
        assert precision.autocast_dtype == torch.bfloat16 and not precision.use_scaler
    assert optim.resolve_precision("no", cpu).weight_dtype == torch.float32
    with pytest.raises(TrainingError, match="mixed_precision"):
        optim.resolve_precision("fp8", cpu)


def test_cpu_bf16_detection_follows_torch(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not optim.cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert optim.cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert optim.cpu_has_bf16()


def test_trainable_params_are_cast_to_fp32() -> None:
    layer = torch.nn.Linear(2, 2).to(torch.bfloat16)
    layer.bias.requires_grad_(False)
    optim.cast_trainable_to_fp32([layer])
    assert layer.weight.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16


def test_loss_ema_is_bias_corrected_and_restorable() -> None:
    ema = optim.LossEMA(0.5)
    assert math.isnan(ema.smoothed)
    assert ema.update(2.0) == pytest.approx(2.0)  # bias-corrected: the first value is the value itself
    assert ema.update(4.0) == pytest.approx((0.25 * 2 + 0.5 * 4) / 0.75)
    copy = optim.LossEMA()
    copy.load_state_dict(ema.state_dict())
    assert copy.update(1.0) == ema.update(1.0)
