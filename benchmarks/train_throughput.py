"""LoRA training throughput: our trainer against a diffusers-example-style baseline, same model, data and settings.

(Over 500 lines: one self-contained script - model building, data, both loops and the report - runnable alone.)

Builds (untimed) an SD1.5-architecture diffusers folder with random weights and a set of generated
images with tag captions, then trains it, each variant in a fresh subprocess (so each one's peak
memory is its own), with the same rank, alpha, learning rate, batch size, resolution, steps and seed:

- ``baseline``: the loop of diffusers' ``train_text_to_image_lora.py`` (``_baseline_train.py``): images
  decoded and the VAE encoder + text encoder run every step, fixed-size centre crops, LoRA on
  to_k/to_q/to_v/to_out.0, AdamW, grad clip 1.0;
- ``ours``: ``training.trainer.train`` with a ``TrainConfig`` built from a dict as the worker does,
  LoRA on the baseline's targets (the like-for-like ratio);
- ``ours-kohya``: the same with the trainer's default targets (kohya's: every Linear / 1x1 conv in the
  transformer blocks);
- ``ours-compile``: ``ours`` with ``compile`` on (``torch.compile`` of the UNet step; not in the default
  list, its first compile takes minutes on a CPU). Its compile time, inside step 1 (a warm-up step), is
  shown as a one-off cost; Inductor's cache is a fresh folder per benchmark run, so round 1 compiles cold
  and later rounds find the cache as a second training run would.

Per variant: steps/s and images/s over the timed steps (``--warmup`` steps excluded), the one-off
time before the first step (model loading, and for ours the caching), end-to-end wall time including
it, where the baseline's step time goes (data / VAE+TE / UNet+optimiser), peak memory (GPU:
``torch.cuda.max_memory_allocated``; CPU: the subprocess's peak RSS), the FLOPs of one step (counted
with ``torch.utils.flop_counter`` on the meta device: UNet+LoRA forward+backward, plus VAE encode and
text encoder for the baseline) and the achieved FLOP/s, as model-FLOP utilisation on a GPU. Ratios are
ours / baseline.

Models: ``--model small`` (default): SD1.5's configs with every width divided by 8 (same classes,
depths, heads and VAE/UNet proportions, so the VAE / text-encoder share of a step is like SD1.5's),
128 px; ``--model tiny``: the unit tests' tiny model (tests/support/tiny_sd.py); ``--full``: the real
SD1.5 architecture (training/configs/sd15/*.json) with random weights, 512 px, batch 4, bf16 autocast
on a GPU.

On a shared CPU the wall-clock figures move with the other load (the load average is printed): the
process CPU time per step is shown too, and ``--rounds N`` interleaves N runs of each variant and shows
each variant's median run. ``--profile VARIANT[,VARIANT]`` prints torch.profiler tables of those
variants' timed steps (on a GPU also the kernel time and launches per step; peak memory then includes
the profiler's records). ``--baseline-workers N`` gives the baseline N persistent DataLoader workers
(its script's default is none: images are decoded inside the step), a stricter comparison.

usage: python benchmarks/train_throughput.py [--model small|tiny] [--steps 20] [--warmup 3] [--threads 2] [--rounds 3]
       python benchmarks/train_throughput.py --full [--device cuda] [--steps 20] [--batch 4]
       python benchmarks/train_throughput.py --full --steps 2 --device cpu          (smoke run: 256 px, batch 1; slow)
       options: --variants baseline,ours,ours-kohya,ours-compile  --set gradient_checkpointing=true  --profile ours
                --baseline-workers 4  --model-dir /tmp/sd15 (build once, reuse)  --peak-tflops 989
                --compile-cache /tmp/inductor (reuse compiled kernels across runs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BASELINE_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
# kohya's default (every Linear / 1x1 conv inside Transformer2DModel), as peft name suffixes: used for FLOPs
KOHYA_SUFFIXES = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
VARIANTS = ("baseline", "ours", "ours-kohya", "ours-compile")
DEFAULT_VARIANTS = ("baseline", "ours", "ours-kohya")
# Peak dense bf16 tensor FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
)
TAGS = ("1girl", "solo", "red hair", "long hair", "smile", "looking at viewer", "school uniform", "outdoors",
        "blue eyes", "upper body", "short hair", "hat", "blush", "open mouth", "standing", "simple background")


# --------------------------------------------------------------------------- setup (untimed)


def sd15_configs() -> dict[str, dict]:
    folder = REPO / "training" / "configs" / "sd15"
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in ("unet", "vae", "text_encoder")}


def small_configs(div: int = 8) -> dict[str, dict]:
    """SD1.5 with every width / div: same depths, heads, block types and VAE:UNet width ratio."""
    cfg = sd15_configs()
    unet, vae, te = dict(cfg["unet"]), dict(cfg["vae"]), dict(cfg["text_encoder"])
    unet.update(block_out_channels=[c // div for c in unet["block_out_channels"]], norm_num_groups=8,
                cross_attention_dim=unet["cross_attention_dim"] // div, sample_size=16)
    vae.update(block_out_channels=[c // div for c in vae["block_out_channels"]], norm_num_groups=8, sample_size=128)
    te.update(hidden_size=te["hidden_size"] // div, intermediate_size=te["intermediate_size"] // div,
              projection_dim=te["projection_dim"] // div)
    return {"unet": unet, "vae": vae, "text_encoder": te}


def build_model(folder: Path, kind: str) -> Path:
    """A diffusers SD1.5-layout folder: the tiny test model's tokenizer and scheduler, random weights of ``kind``."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from support.tiny_sd import build_tiny_sd15
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    build_tiny_sd15(folder, seed=0)
    if kind == "tiny":
        return folder
    cfg = sd15_configs() if kind == "full" else small_configs()
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    te_cfg = {k: v for k, v in cfg["text_encoder"].items() if k not in ("architectures", "model_type")}
    # the tokenizer is the tiny test one (no CLIP vocabulary offline): its ids and its vocabulary size (the
    # loader checks they match). Only the token-embedding table shrinks (49408 -> ~500 rows); compute is the same.
    te_cfg.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**te_cfg)).save_pretrained(folder / "text_encoder")
    AutoencoderKL.from_config(cfg["vae"]).save_pretrained(folder / "vae")
    UNet2DConditionModel.from_config(cfg["unet"]).save_pretrained(folder / "unet")
    return folder


def write_images(folder: Path, count: int, size: int, mixed: bool) -> list[dict]:
    """Flat-coloured 'characters' on gradients with line art; squares of ``size`` (or mixed aspect ratios)."""
    import random

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    items = []
    for i in range(count):
        w, h = (size, size)
        if mixed and i % 3:
            w, h = (size, size * 3 // 2) if i % 3 == 1 else (size * 3 // 2, size)
        image = Image.new("RGB", (w, h))
        draw = ImageDraw.Draw(image)
        top, bottom = [rng.randrange(40, 230) for _ in range(3)], [rng.randrange(20, 200) for _ in range(3)]
        for y in range(h):
            draw.line((0, y, w, y), fill=tuple(t + (b - t) * y // h for t, b in zip(top, bottom, strict=True)))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((w // 4, h // 6, 3 * w // 4, h - h // 8), fill=colour, outline=(15, 15, 15), width=max(1, w // 64))
        for _ in range(12):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.line((x, y, x + rng.randrange(-w // 4, w // 4), y + rng.randrange(-h // 4, h // 4)),
                      fill=(15, 15, 15), width=max(1, w // 128))
        path = folder / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"
        image.save(path, quality=92)
        tags = rng.sample(TAGS, 6)
        items.append({"image": str(path), "caption": "aiko, " + ", ".join(tags)})
    return items


# --------------------------------------------------------------------------- FLOPs (meta device, no compute)


def count_flops(model_dir: Path, batch: int, resolution: int, targets: list[str], with_encoders: bool) -> dict:
    """FLOPs of one training step: UNet+LoRA forward+backward, plus VAE encode + text encoder if asked."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    meta = torch.device("meta")
    with meta:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(model_dir / "unet")))
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    f = resolution // 8
    te_config = CLIPTextConfig.from_pretrained(str(model_dir / "text_encoder"))
    args = (torch.empty(batch, 4, f, f, device=meta), torch.zeros(batch, dtype=torch.long, device=meta),
            torch.empty(batch, 77, te_config.hidden_size, device=meta))
    out: dict[str, float] = {}
    # the math backend decomposes attention into counted matmuls on every device
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        unet(*args).sample.float().square().mean().backward()
    out["unet"] = counter.get_total_flops()
    out["encoders"] = 0.0
    if with_encoders:
        with meta:
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(model_dir / "vae")))
            te = CLIPTextModel(te_config)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            vae.encode(torch.empty(batch, 3, resolution, resolution, device=meta)).latent_dist.sample()
            te(torch.zeros(batch, 77, dtype=torch.long, device=meta))
        out["encoders"] = counter.get_total_flops()
    out["step"] = out["unet"] + out["encoders"]
    return out


def peak_tflops(device_name: str) -> float | None:
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()), None)


# --------------------------------------------------------------------------- child: one variant


def _ours_config(spec: dict, variant: str) -> dict:
    raw = {
        "base_model": spec["base_model"], "items": spec["items"], "output_path": spec["output_path"],
        "steps": spec["total_steps"], "rank": spec["rank"], "alpha": spec["alpha"],
        "learning_rate": spec["learning_rate"], "resolution": spec["resolution"], "batch_size": spec["batch_size"],
        "seed": spec["seed"], "device": spec["device"], "mixed_precision": spec["mixed_precision"],
        # the baseline's recipe, not the studio's defaults (cosine, min-SNR 5, checkpoints and samples)
        "lr_scheduler": "constant", "min_snr_gamma": 0.0, "checkpoint_every": 0, "sample_every": 0,
    }
    if variant in ("ours", "ours-compile"):
        raw["target_modules"] = list(BASELINE_TARGETS)
    if variant == "ours-compile":
        raw["compile"] = True
    raw.update(spec.get("ours_overrides", {}))
    return raw


class _Events:
    """Accepts the trainer's callback in any of its shapes: (step, total, loss), an event dict, or (name, **fields)."""

    def __init__(self, profiler: Any = None) -> None:
        self.profiler = profiler
        self.steps: list[tuple[int, float]] = []  # (step, perf_counter)
        self.cpu: list[float] = []  # process CPU time at each step
        self.phases: list[tuple[str, float]] = []  # (phase name, perf_counter) when the phase starts
        self.loss = float("nan")

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        if args and isinstance(args[0], dict):
            event = dict(args[0])
        elif args and isinstance(args[0], str):
            event = {"event": args[0], **kwargs}
        elif len(args) >= 2 and all(isinstance(a, int | float) for a in args[:3]):
            event = {"event": "progress", "step": args[0], "loss": args[2] if len(args) > 2 else float("nan")}
        else:
            event = {"event": kwargs.get("event", "progress"), **kwargs}
        name = event.get("event")
        if name == "progress":
            self.steps.append((int(event["step"]), now))
            self.cpu.append(time.process_time())
            if self.profiler is not None:
                self.profiler.step()
            self.loss = float(event.get("loss", float("nan")))
        elif name == "phase" and (not self.phases or self.phases[-1][0] != event.get("name")):
            self.phases.append((str(event.get("name")), now))
        elif name == "phase" and event.get("name") == "compiling" and event.get("done") == event.get("total"):
            self.phases.append(("training", now))  # the compiled step 1 ends: training goes on


def _import_trainer() -> tuple[Any, Any]:
    """``train`` and ``parse_config`` from the pack: installed as ``lora_studio``, or else this checkout
    registered under that name without running its root ``__init__`` (as the worker does)."""
    import importlib
    import importlib.machinery
    import types

    try:
        import lora_studio  # noqa: F401
    except ImportError:
        spec = importlib.machinery.ModuleSpec("lora_studio", None, is_package=True)
        spec.submodule_search_locations = [str(REPO)]
        package = types.ModuleType("lora_studio")
        package.__spec__, package.__path__, package.__package__ = spec, [str(REPO)], "lora_studio"
        sys.modules["lora_studio"] = package
    trainer = importlib.import_module("lora_studio.training.trainer")
    config = importlib.import_module("lora_studio.training.config")
    return trainer.train, config.parse_config


def run_child(variant: str, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    import resource

    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    import diffusers  # noqa: F401  (imports before any timing: both variants pay them alike)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    rss_import_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    profiler = None
    if variant in spec.get("profile", []):
        from torch.profiler import ProfilerActivity, profile, schedule

        # steady state only: the profiler steps at each training step and records after the warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        warm = max(1, spec["warmup"])
        profiler = profile(activities=activities, schedule=schedule(wait=warm - 1, warmup=1,
                                                                   active=spec["total_steps"] - warm))
        profiler.__enter__()
    result: dict[str, Any] = {"variant": variant}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    if variant == "baseline":
        sys.path.insert(0, str(HERE))
        from _baseline_train import run_baseline

        step_times: list[tuple[int, float]] = []
        cpu_times: list[float] = []
        sections: list[dict[str, float]] = []

        def on_step(step: int, parts: dict[str, float]) -> None:
            step_times.append((step, time.perf_counter()))
            cpu_times.append(time.process_time())
            if profiler is not None:
                profiler.step()
            sections.append(parts)

        info = run_baseline(spec, on_step)
        t_end = time.perf_counter()
        timed = sections[spec["warmup"]:]
        result.update(setup_s=info["load_s"], load_s=info["load_s"], caching_s=0.0, loss=info["loss"],
                      lora_modules=info["lora_modules"],
                      sections_ms={k: 1000 * statistics.mean(s[k] for s in timed) for k in timed[0]})
    else:
        train, parse_config = _import_trainer()

        config = parse_config(_ours_config(spec, variant))
        events = _Events(profiler)
        t_start, cpu_start = time.perf_counter(), time.process_time()
        outcome = train(config, events, lambda: False)
        t_end = time.perf_counter()
        step_times, cpu_times = events.steps, events.cpu
        result.update(loss=events.loss, lora_modules=getattr(outcome, "num_modules", None), phases={})
        marks = events.phases + [("end", t_end)]
        for (name, t0), (_, t1) in zip(marks, marks[1:], strict=False):
            result["phases"][name] = result["phases"].get(name, 0.0) + t1 - t0
    if profiler is not None:
        profiler.__exit__(None, None, None)
        averages = profiler.key_averages()
        timed = spec["total_steps"] - max(1, spec["warmup"])
        text = f"torch.profiler, {timed} timed steps, sorted by self CPU time:\n"
        text += averages.table(sort_by="self_cpu_time_total", row_limit=20)
        if cuda:
            import re

            by_gpu = averages.table(sort_by="self_device_time_total", row_limit=20)
            found = re.search(r"Self CUDA time total: ([\d.]+)(us|ms|s)\b", by_gpu)
            busy_ms = float(found[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found[2]] if found else float("nan")
            launches = sum(e.count for e in averages if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                    "cudaLaunchKernelExC", "cuLaunchKernelEx"))
            text += (f"\nGPU busy (sum of kernel times) per step: {busy_ms / timed:.1f} ms; "
                     f"kernel launches per step: {launches / timed:.0f}\nsorted by GPU time:\n")
            text += by_gpu
        text += "\nmost frequent ops:\n" + averages.table(sort_by="count", row_limit=15)
        Path(spec["profile_out"]).with_name(f"profile-{variant}.txt").write_text(text)
    if cuda:
        torch.cuda.synchronize(device)
    warm = spec["warmup"]
    if len(step_times) != spec["total_steps"]:
        raise SystemExit(f"{variant}: saw {len(step_times)} step events, expected {spec['total_steps']}")
    (_, t_warm), (_, t_last) = step_times[warm - 1] if warm else (0, t_start), step_times[-1]
    per_step = [b - a for (_, a), (_, b) in zip(step_times[warm:], step_times[warm + 1:], strict=False)]
    step_s = (t_last - t_warm) / (len(step_times) - warm)
    # CPU seconds of the process per step: on a shared machine less disturbed by others than wall time
    cpu_step_s = (cpu_times[-1] - (cpu_times[warm - 1] if warm else cpu_start)) / (len(step_times) - warm)
    first_step_at = step_times[0][1] - t_start
    if variant != "baseline":
        phases = result["phases"]
        if "training" in phases:  # the trainer says when its loading / caching end
            result["load_s"] = phases.get("loading", 0.0)
            result["caching_s"] = phases.get("caching", 0.0)
            result["compile_s"] = phases.get("compiling")  # step 1 with its compile, None when not compiled
            result["setup_s"] = sum(v for k, v in phases.items() if k in ("loading", "caching", "compiling"))
        else:  # an older trainer: everything before step 1, less one steady-state step
            result["setup_s"] = max(0.0, first_step_at - step_s)
            result["load_s"], result["caching_s"] = None, None
    result.update(
        steps=len(step_times), step_s=step_s, cpu_step_s=cpu_step_s, step_median_s=statistics.median(per_step) if per_step else step_s,
        total_s=t_end - t_start, first_step_at_s=first_step_at,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, import_rss_mb=rss_import_kb / 1024,
        peak_cuda_mb=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        threads_after=torch.get_num_threads(),
        device_name=torch.cuda.get_device_name(device) if cuda else "cpu",
    )
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent


def run_variant(variant: str, spec: dict, work: Path, verbose: bool) -> dict:
    spec = dict(spec, output_path=str(work / f"out-{variant}-{time.monotonic_ns()}.safetensors"))
    spec_path = work / f"spec-{variant}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DIFFUSERS_NO_ADVISORY_WARNINGS="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(spec["threads"]),
               TORCHINDUCTOR_CACHE_DIR=spec["compile_cache"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--spec", str(spec_path)]
    proc = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=None if verbose else subprocess.PIPE)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = "\n".join((proc.stderr or "").splitlines()[-40:])
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode}):\n{tail}\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def report(results: dict[str, dict], flops: dict[str, dict], args: argparse.Namespace, spec: dict) -> None:
    batch, steps = spec["batch_size"], spec["total_steps"]
    device_name = next(iter(results.values()))["device_name"]
    peak = args.peak_tflops or (peak_tflops(device_name) if spec["device"] == "cuda" else None)
    print(f"\n{'':34}" + "".join(f"{v:>16}" for v in results))
    rows: list[tuple[str, Any]] = [
        ("steps/s (timed steps)", lambda r, v: f"{1 / r['step_s']:.3f}"),
        ("images/s", lambda r, v: f"{batch / r['step_s']:.2f}"),
        ("ms/step (median)", lambda r, v: f"{1000 * r['step_median_s']:.1f}"),
        ("CPU ms/step (process time)", lambda r, v: f"{1000 * r['cpu_step_s']:.1f}"),
        ("before step 1: load (s)", lambda r, v: _fmt(r.get("load_s"), ".2f")),
        ("before step 1: caching (s)", lambda r, v: _fmt(r.get("caching_s"), ".2f")),
        ("one-off: compile, in step 1 (s)", lambda r, v: _fmt(r.get("compile_s"), ".2f")),
        ("one-off total (s)", lambda r, v: f"{r['setup_s']:.2f}"),
        ("caching per step (ms, amortised)", lambda r, v: _fmt(
            None if r.get("caching_s") is None else 1000 * r["caching_s"] / steps, ".1f")),
        (f"end-to-end {steps} steps (s)", lambda r, v: f"{r['total_s']:.2f}"),
        ("end-to-end steps/s incl. setup", lambda r, v: f"{steps / r['total_s']:.3f}"),
        ("peak CUDA allocated (MiB)", lambda r, v: _fmt(r.get("peak_cuda_mb"), ".0f")),
        ("peak RSS (MiB)", lambda r, v: f"{r['peak_rss_mb']:.0f}"),
        ("peak RSS - after imports (MiB)", lambda r, v: f"{r['peak_rss_mb'] - r['import_rss_mb']:.0f}"),
        ("LoRA modules", lambda r, v: str(r.get("lora_modules"))),
        ("GFLOP/step (model)", lambda r, v: f"{flops[v]['step'] / 1e9:.2f}"),
        ("achieved TFLOP/s", lambda r, v: f"{flops[v]['step'] / r['step_s'] / 1e12:.3f}"),
        ("MFU (model FLOPs / peak)", lambda r, v: _fmt(
            None if not peak else 100 * flops[v]["step"] / r["step_s"] / (peak * 1e12), ".1f", " %")),
        ("final loss", lambda r, v: f"{r['loss']:.4f}"),
    ]
    for label, fn in rows:
        print(f"{label:34}" + "".join(f"{fn(r, v):>16}" for v, r in results.items()))
    base = results.get("baseline")
    if base:
        s = base["sections_ms"]
        print(f"\nbaseline ms/step (wall): data {s['data']:.1f}, VAE encode + text encoder {s['encode']:.1f}, "
              f"noise + UNet fwd+bwd + optimiser {s['unet']:.1f}")
        if spec["device"] == "cpu":
            print(f"baseline CPU ms/step:    data {s['cpu_data']:.1f}, VAE encode + text encoder {s['cpu_encode']:.1f}, "
                  f"noise + UNet fwd+bwd + optimiser {s['cpu_unet']:.1f}")
    if peak:
        print(f"peak bf16 dense: {peak:g} TFLOP/s ({'--peak-tflops' if args.peak_tflops else device_name})")
    for v, r in results.items():
        if r.get("threads_after") != spec["threads"]:
            print(f"note: {v} left torch at {r['threads_after']} threads (set {spec['threads']})")
    if not base:
        return
    print()
    for v, r in results.items():
        if v == "baseline":
            continue
        mem_key = "peak_cuda_mb" if spec["device"] == "cuda" else "peak_rss_mb"
        print(f"ratio {v} / baseline: steps/s {base['step_s'] / r['step_s']:.2f}× "
              f"(median step {base['step_median_s'] / r['step_median_s']:.2f}×, "
              f"CPU time per step {base['cpu_step_s'] / r['cpu_step_s']:.2f}×), "
              f"end-to-end incl. setup {base['total_s'] / r['total_s']:.2f}×, "
              f"peak memory {r[mem_key] / base[mem_key]:.2f}×")
        extra = r["setup_s"] - base["setup_s"]
        saved = base["step_s"] - r["step_s"]
        if extra > 0 and saved > 0:
            print(f"  its extra one-off time ({extra:.2f} s) is paid back after {extra / saved:.0f} steps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("small", "tiny"), default="small")
    ap.add_argument("--full", action="store_true", help="the full SD1.5 architecture (random weights), for a GPU")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--mixed-aspect", action="store_true", help="2 in 3 images 2:3 or 3:2 (ours buckets them)")
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int, help="timed steps (after the warm-up)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-precision", default="bf16", choices=("bf16", "fp16", "no"), help="GPU only")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, same for all")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved runs of each variant (the median is shown)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="extra TrainConfig field for our variants, e.g. gradient_checkpointing=true")
    ap.add_argument("--peak-tflops", type=float, help="the card's peak dense bf16 TFLOP/s (overrides the table)")
    ap.add_argument("--profile", default="", help="comma-separated variants to profile (torch.profiler tables)")
    ap.add_argument("--baseline-workers", type=int, default=0,
                    help="DataLoader workers for the baseline (its script's default is 0: images decoded in the loop)")
    ap.add_argument("--model-dir", type=Path, help="build the model here, or reuse the one an earlier run built")
    ap.add_argument("--compile-cache", type=Path,
                    help="Inductor's cache folder for ours-compile (default: a fresh one per run, so round 1 is cold)")
    ap.add_argument("--verbose", action="store_true", help="show the subprocesses' logs")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.spec)
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = "full" if args.full else args.model
    gpu_full = kind == "full" and device == "cuda"
    resolution = args.resolution or (512 if gpu_full else 256 if kind == "full" else 128)
    batch = args.batch or (4 if gpu_full or kind != "full" else 1)
    steps = args.steps or (20 if kind != "full" or gpu_full else 2)
    warmup = args.warmup if args.warmup is not None else (3 if kind != "full" or gpu_full else 1)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants: {', '.join(sorted(unknown))}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value else True
    profiled = [v.strip() for v in args.profile.split(",") if v.strip()]
    if set(profiled) - set(VARIANTS):
        ap.error(f"unknown variants to profile: {', '.join(sorted(set(profiled) - set(VARIANTS)))}")
    mixed = args.mixed_precision if device == "cuda" else "no"
    print(f"model {kind} (random weights, SD1.5 layout), {args.images} images, {resolution} px, batch {batch}, "
          f"rank {args.rank}, alpha {args.alpha:g}, lr {args.lr:g}, {warmup} warm-up + {steps} timed steps, "
          f"device {device}, precision {mixed if mixed != 'no' else 'fp32'}, torch threads {args.threads}, "
          f"baseline DataLoader workers {args.baseline_workers}, our overrides {overrides or 'none'}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        if args.model_dir and (args.model_dir / "model_index.json").exists():
            model_dir = args.model_dir  # reused as it is: built by an earlier run with the same --model/--full
        else:
            model_dir = build_model(args.model_dir or work / "model", kind)
        items = write_images(work / "images", args.images, resolution * 3 // 2, args.mixed_aspect)
        print(f"built the model and images in {time.perf_counter() - t:.1f} s (not timed)")
        spec = {
            "base_model": str(model_dir), "items": items, "total_steps": warmup + steps, "warmup": warmup,
            "rank": args.rank, "alpha": args.alpha, "learning_rate": args.lr, "resolution": resolution,
            "batch_size": batch, "seed": args.seed, "device": device, "mixed_precision": mixed,
            "threads": args.threads, "ours_overrides": overrides, "profile": profiled,
            "baseline_workers": args.baseline_workers,
            "profile_out": str(work / "profile.txt"), "compile_cache": str(args.compile_cache or work / "inductor-cache"),
        }
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for round_no in range(args.rounds):  # interleaved, so a busy spell on a shared machine hits all alike
            for variant in variants:
                t = time.perf_counter()
                runs[variant].append(run_variant(variant, spec, work, args.verbose))
                compiled = runs[variant][-1].get("compile_s")
                print(f"  round {round_no + 1}, {variant}: {1 / runs[variant][-1]['step_s']:.3f} steps/s, "
                      f"done in {time.perf_counter() - t:.1f} s"
                      + (f" (step 1 with the compile: {compiled:.1f} s)" if compiled is not None else ""))
        # every figure of a variant comes from one run: its median run by steps/s
        results = {v: sorted(rs, key=lambda r: r["step_s"])[len(rs) // 2] for v, rs in runs.items()}
        flops = {v: count_flops(model_dir, batch, resolution, BASELINE_TARGETS if v != "ours-kohya" else KOHYA_SUFFIXES,
                                with_encoders=v == "baseline") for v in variants}
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        report(results, flops, args, spec)
        if args.rounds > 1 and "baseline" in runs:
            print("\nratios within each round (paired: the same minutes of a shared machine), steps/s:")
            for v in variants:
                if v == "baseline":
                    continue
                paired = [b["step_s"] / r["step_s"] for b, r in zip(runs["baseline"], runs[v], strict=True)]
                print(f"  {v} / baseline: " + ", ".join(f"{x:.2f}×" for x in paired)
                      + f"; median {statistics.median(paired):.2f}×")
        for variant in profiled:
            path = work / f"profile-{variant}.txt"
            if path.exists():
                print(f"\nprofile of {variant} (its peak memory above includes the profiler's records):\n"
                      f"{path.read_text()}")


if __name__ == "__main__":
    main()
