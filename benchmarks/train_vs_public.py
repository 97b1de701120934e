"""LoRA training: our trainer against the two public trainers, run unmodified, on one model, data and recipe.

Runs diffusers' ``examples/text_to_image/train_text_to_image_lora.py``, kohya sd-scripts' ``train_network.py``
(both as their own scripts, in their own Pythons, from checkouts you pass; nothing of them is copied here) and
``training.trainer.train``, each in a fresh process, in interleaved rounds (a shared machine's speed wanders
by +-20 %: compare within a round). Same model, images, captions, rank 4 / alpha 4 (diffusers' example sets
alpha = rank), AdamW at lr 1e-4, constant schedule, batch 2, no flips, no min-SNR, grad clip 1.0, seed 0.

Variants: ``diffusers`` (LoRA on attention to_q/k/v/out.0; VAE and text encoder run every step; fp32 on a CPU
unless --public-precision bf16), ``kohya`` (networks.lora: every Linear / 1x1 conv in the transformer blocks,
UNet only; latents cached; the text encoder runs every step: SD1.5's train_network has no text-encoder
cache), ``ours`` (default targets = kohya's set, default mixed_precision), ``ours-attn`` (diffusers' targets),
``ours-fp32`` (``ours`` with mixed_precision "no", so the precision lever shows). On a CPU both public
scripts' default is fp32; ``--public-precision bf16`` gives them ``--mixed_precision bf16``, the
matched-precision comparison: accelerate autocasts to bf16 on a CPU too; kohya then casts the UNet to bf16
and keeps the LoRA in fp32, diffusers' example casts UNet, VAE, text encoder and the LoRA itself to bf16.

Figures per variant (its median run by steps/s; all from the parent's clock and the child's rusage):
- steps/s: the training loop only, (N - w) / (t(N) - t(w)), t(n) = when step n's count first appears in the
  child's output (tqdm's "n/N" of the public scripts' progress bar, our progress events), w = --warmup;
- time to step 1: process start -> step 1 done (imports, model loading, caching, step 1);
- end-to-end: process start -> exit (also the rest of the steps, saving the LoRA and shutdown);
- peak RSS: the child's own ru_maxrss (``os.wait4``), whole process;
- trainable params: elements of the saved LoRA matrices (read from the file's header; alpha scalars left
  out); modules: LoRA pairs in it;
- loss: mean of the last 4 per-step training losses (each one step's batch MSE; public scripts: read from
  their TensorBoard logs, diffusers' ``train_loss``, kohya's ``loss/current`` - kohya runs with
  ``--log_with tensorboard``, its progress bar shows only a running mean; ours: progress events).
Ratios: each ours-variant's steps/s over the FASTER public trainer's of the same round, and end-to-end; and
like for like (same LoRA targets): ours and ours-fp32 / kohya, ours-attn / diffusers.

Shapes. The model is always the full SD1.5 architecture with random weights (train_throughput's
``build_model(folder, "full")``; its tiny tokenizer, vocab ~500): kohya converts every UNet into its own
``original_unet`` whose widths are hard-coded to SD1.5's, so it cannot train a smaller UNet. Quick (default):
64 px (8x8 latents), 16 images, 2 warm-up + 4 timed steps: 25-150 s a run on 2 CPU cores, 5-10 min for
``--rounds 2`` of the 5 variants. ``--full``: 256 px on a CPU (8 images, 1 warm-up + 4 timed steps; 3-10 s a
step on that CPU, hardly more than at 64 px: the full UNet's weights, not the pixels, dominate a small
batch's step there; ~5 min for one round), 512 px with bf16 (public --mixed_precision bf16, ours' default)
on a GPU. Images are squares of exactly the resolution, so no crop or bucket differs. Only the kohya run
adds flags beyond a plain CPU recipe: ``--tokenizer_cache_dir`` (a copy of the model's tokenizer, since it
otherwise fetches CLIP's from the hub) and the TensorBoard log for its per-step losses.

Where a step's time goes (torch.profiler over 3 steps of the UNet step ours runs: full SD1.5, 256 px, batch 2,
bf16 autocast, channels-last, kohya's targets, AdamW + clipping; torch 2.13, 2 threads, 2026-12-07; ~1.9 s of
op time per step): convolution backward (input gradients only: the base is frozen) 512 ms, convolution forward
293 ms, matmuls 249 + 81 ms (addmm), SDPA flash attention backward 244 + forward 50 ms, dtype casts (3,800 per
step: autocast casting LoRA weights and norm inputs/outputs) 103 ms, element-wise mul/add 145 ms, group/layer
norms 40 ms, GELU/SiLU 35 ms, AdamW 7 ms. About 74 % is oneDNN's convolution, matmul and attention kernels,
which every trainer calls alike at the same precision; that is why kohya given --mixed_precision bf16 comes
within 1.15x of ours. What fusion could still take is in the remaining ~20 %: torch.compile of the same
step measured 1.08x (1.78 vs 1.92 s) after a 200 s cold compile, so it stays opt-in.

Getting the trainers (tested: sd-scripts 48d368fa, diffusers 58eb52c0 with diffusers 0.42.1, torch 2.14.1):
  git clone https://github.com/kohya-ss/sd-scripts /work/bench/sd-scripts
  git clone --depth 1 https://github.com/huggingface/diffusers /work/bench/diffusers   # examples/ is used
  python3.11 -m venv /work/bench/venv-kohya
  /work/bench/venv-kohya/bin/pip install torch==2.14.1 torchvision==0.29.1
  cd /work/bench/sd-scripts && ../venv-kohya/bin/pip install -r requirements.txt   # pins diffusers 0.32.1 ...
  python3.11 -m venv /work/bench/venv-diffusers
  /work/bench/venv-diffusers/bin/pip install torch==2.14.1 torchvision==0.29.1
  /work/bench/venv-diffusers/bin/pip install diffusers==0.42.1 accelerate transformers datasets ftfy \\
      tensorboard Jinja2 peft        # the example's requirements.txt; it needs diffusers >= 0.40
  /work/bench/venv-diffusers/bin/pip install -e '/path/to/lora-studio[train]'   # ours on the same torch
Both public scripts need torchvision; install torch first with the torchvision that matches it.

usage: venv-diffusers/bin/python benchmarks/train_vs_public.py --diffusers /work/bench/diffusers \\
           --kohya /work/bench/sd-scripts --kohya-python /work/bench/venv-kohya/bin/python \\
           --diffusers-python /work/bench/venv-diffusers/bin/python [--rounds 2] [--model-dir /tmp/sd15]
       ... --full --steps 4 --warmup 1 --rounds 1        (256 px on a CPU: ~5 min on 2 cores)
       options: --variants diffusers,kohya,ours,ours-attn,ours-fp32  --public-precision no|bf16  --threads 2
                --images 16  --resolution 64  --keep (keep the work folder: logs, LoRAs)  --verbose
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VARIANTS = ("diffusers", "kohya", "ours", "ours-attn", "ours-fp32")
PUBLIC = ("diffusers", "kohya")
SAME_TARGETS = (("ours", "kohya"), ("ours-fp32", "kohya"), ("ours-attn", "diffusers"))
DIFFUSERS_SCRIPT = "examples/text_to_image/train_text_to_image_lora.py"
KOHYA_SCRIPT = "train_network.py"
# tqdm's training bar: diffusers' desc is "Steps", kohya's "steps" (their caching bars have no such desc)
BAR = re.compile(r"(?i)\bsteps:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)(?:\s*\[([^\]]*)\])?")
OURS_STEP = re.compile(r"^STEP (\d+)/(\d+) loss=(\S+)")
KOHYA_MODULES = re.compile(r"create LoRA for U-Net: (\d+) modules")
TB_TAGS = {"diffusers": "train_loss", "kohya": "loss/current"}
TB_READER = """import glob, json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for path in glob.glob(sys.argv[1] + '/**/events.out.tfevents*', recursive=True):
    acc = EventAccumulator(path, size_guidance={'scalars': 0}); acc.Reload()
    if sys.argv[2] in acc.Tags()['scalars']:
        out.update({e.step: e.value for e in acc.Scalars(sys.argv[2])})
print(json.dumps([out[k] for k in sorted(out)]))"""


# --------------------------------------------------------------------------- children (run in the ours-python)


def child_prepare(spec: dict) -> None:
    """Build the model (unless there), write the images and both public layouts; print RESULT."""
    sys.path.insert(0, str(HERE))
    import torch
    from train_throughput import build_model, write_images

    model, work = Path(spec["model_dir"]), Path(spec["work"])
    t = time.perf_counter()
    if not (model / "model_index.json").exists():
        build_model(model, "full")
    built_s = time.perf_counter() - t
    items = write_images(work / "data" / "images", spec["images"], spec["resolution"], False)
    kohya, diffusers = work / "data" / "kohya" / "1_aiko", work / "data" / "diffusers"  # kohya: <repeats>_<name>
    kohya.mkdir(parents=True)
    diffusers.mkdir(parents=True)
    rows = []
    for item in items:
        path = Path(item["image"])
        for folder in (kohya, diffusers):
            os.link(path, folder / path.name)
        (kohya / path.name).with_suffix(".txt").write_text(item["caption"], encoding="utf-8")
        rows.append(json.dumps({"file_name": path.name, "text": item["caption"]}))
    (diffusers / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # kohya loads openai/clip-vit-large-patch14 from the hub unless <tokenizer_cache_dir>/<id with _> exists
    shutil.copytree(model / "tokenizer", work / "tokenizers" / "openai_clip-vit-large-patch14")
    print("RESULT " + json.dumps({"items": items, "cuda": torch.cuda.is_available(), "built_s": built_s,
                                  "torch": torch.__version__}), flush=True)


def child_ours(spec: dict) -> None:
    """One run of our trainer; each finished step printed as a STEP line (the parent timestamps it)."""
    sys.path.insert(0, str(HERE))
    import torch
    from train_throughput import _Events, _import_trainer, _ours_config

    torch.set_num_threads(spec["threads"])
    variant = spec["variant"]
    train, parse_config = _import_trainer()
    raw = _ours_config(spec, "ours" if variant == "ours-attn" else "ours-kohya")  # attention / default targets
    if variant == "ours-fp32":
        raw["mixed_precision"] = "no"
    else:
        raw.pop("mixed_precision")  # the trainer's default

    class Events(_Events):
        def __call__(self, *args, **kwargs) -> None:
            before = len(self.steps)
            super().__call__(*args, **kwargs)
            if len(self.steps) > before:
                self.losses.append(self.loss)
                print(f"STEP {self.steps[-1][0]}/{spec['total_steps']} loss={self.loss!r}", flush=True)

    events = Events()
    events.losses = []
    config = parse_config(raw)
    train(config, events, lambda: False)
    shown = {k: v for k, v in raw.items() if k not in ("items", "output_path", "base_model")}
    print("RESULT " + json.dumps({"losses": events.losses, "mixed_precision": config.mixed_precision,
                                  "config": shown}), flush=True)


# --------------------------------------------------------------------------- parent


def commands(args: argparse.Namespace, run: dict, out: Path) -> tuple[list[str], Path]:
    """The command line of one run and its working folder."""
    data, n, r = run["data"], str(run["total_steps"]), str(args.rank)
    common_lr = str(args.lr)
    if run["variant"] == "diffusers":
        cmd = [args.diffusers_python, str(args.diffusers / DIFFUSERS_SCRIPT),
               "--pretrained_model_name_or_path", run["model"], "--train_data_dir", f"{data}/diffusers",
               "--caption_column", "text", "--resolution", str(run["resolution"]), "--center_crop",
               "--train_batch_size", str(args.batch), "--max_train_steps", n, "--learning_rate", common_lr,
               "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--rank", r, "--seed", str(args.seed),
               "--mixed_precision", run["public_precision"], "--dataloader_num_workers", "0",
               "--output_dir", str(out)]
        return cmd, args.diffusers / Path(DIFFUSERS_SCRIPT).parent
    if run["variant"] == "kohya":
        cmd = [args.kohya_python, KOHYA_SCRIPT,
               "--pretrained_model_name_or_path", run["model"], "--train_data_dir", f"{data}/kohya",
               "--caption_extension", ".txt", "--tokenizer_cache_dir", run["tokenizers"],
               "--network_module", "networks.lora", "--network_dim", r, "--network_alpha", r,
               "--learning_rate", common_lr, "--unet_lr", common_lr, "--network_train_unet_only",
               "--optimizer_type", "AdamW", "--lr_scheduler", "constant", "--max_train_steps", n,
               "--train_batch_size", str(args.batch), "--resolution", str(run["resolution"]),
               "--mixed_precision", run["public_precision"], "--sdpa", "--cache_latents",
               "--max_data_loader_n_workers", "0", "--seed", str(args.seed), "--save_model_as", "safetensors",
               "--output_dir", str(out), "--log_with", "tensorboard", "--logging_dir", str(out / "logs")]
        return cmd, args.kohya
    return [args.ours_python, str(Path(__file__).resolve()), "--child", "ours", "--spec", str(out / "spec.json")], REPO


def lora_file_stats(path: Path) -> tuple[int, int]:
    """(elements of the LoRA matrices, LoRA modules) from a .safetensors header, without torch."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    params = modules = 0
    for key, info in header.items():
        if key == "__metadata__" or not key.endswith(".weight") or "lora" not in key.lower():
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        params += count
        modules += bool(re.search(r"(lora_down|lora_A|lora\.down)\.weight$", key))
    return params, modules


def worker_malloc_tunables() -> str:
    """``training/worker_client.py: MALLOC_TUNABLES``, read from the source (the parent needs no torch)."""
    source = (REPO / "training" / "worker_client.py").read_text(encoding="utf-8")
    return re.search(r'^MALLOC_TUNABLES = "([^"]+)"', source, re.M)[1]


def run_one(args: argparse.Namespace, run: dict, work: Path, env: dict) -> dict:
    variant = run["variant"]
    out = work / f"out-{variant}-r{run['round']}"
    out.mkdir()
    if variant.startswith("ours"):
        spec = dict(run["ours_spec"], variant=variant, output_path=str(out / "lora.safetensors"))
        (out / "spec.json").write_text(json.dumps(spec))
    cmd, cwd = commands(args, run, out)
    env = dict(env, HF_HOME=str(out / "hf-home"))  # private and empty: no run finds another's dataset cache
    if variant.startswith("ours") and "GLIBC_TUNABLES" not in os.environ:
        env["GLIBC_TUNABLES"] = worker_malloc_tunables()  # the studio's worker runs with these (worker_env)
    log = (out / "log.txt").open("wb")
    seen: dict[int, float] = {}
    losses: dict[int, float] = {}
    text: list[str] = []
    pending = b""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while chunk := os.read(proc.stdout.fileno(), 65536):
        now = time.perf_counter()
        log.write(chunk)
        if args.verbose:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        parts = re.split(rb"[\r\n]", pending + chunk)
        pending = parts.pop()
        for raw in parts:
            line = raw.decode("utf-8", "replace")
            text.append(line)
            found = OURS_STEP.match(line) if variant.startswith("ours") else BAR.search(line)
            if not found or not int(found[1]):
                continue
            step = int(found[1])
            seen.setdefault(step, now)
            if variant.startswith("ours"):
                losses[step] = float(found[3])
            elif value := re.search(r"(?:step_loss|avr_loss)=([-+.\deE]+|nan)", found[3] or ""):
                losses[step] = float(value[1])  # the last postfix shown with a count is that step's
    _, status, usage = os.wait4(proc.pid, 0)
    t_end = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    log.close()
    if proc.returncode or not seen:
        tail = "\n".join(line for line in text[-40:] if line.strip())
        raise SystemExit(f"{variant} (round {run['round']}) failed, exit {proc.returncode}; log {out / 'log.txt'}:\n"
                         f"{tail}\ncommand: {shlex.join(cmd)}")
    total = run["total_steps"]
    last = max(seen)
    start = min((s for s in seen if s >= run["warmup"]), default=min(seen))
    result = {
        "variant": variant, "round": run["round"], "steps_seen": len(seen), "last_step": last,
        "steps_per_s": (last - start) / (seen[last] - seen[start]) if last > start else float("nan"),
        "first_step_s": seen[min(seen)] - t0, "total_s": t_end - t0,
        "peak_rss_mb": usage.ru_maxrss / 1024, "cmd": cmd, "cwd": str(cwd), "precision": run["public_precision"],
    }
    if last != total:
        result["note"] = f"saw steps up to {last} of {total}"
    per_step = [losses[k] for k in sorted(losses)]
    loss_from = "postfix"
    if variant.startswith("ours"):
        line = next((t for t in reversed(text) if t.startswith("RESULT ")), None)
        if line:
            ours = json.loads(line[len("RESULT "):])
            per_step, loss_from, result["precision"] = ours["losses"], "events", ours["mixed_precision"]
            result["config"] = ours["config"]
        lora = out / "lora.safetensors"
    else:
        python = args.diffusers_python if variant == "diffusers" else args.kohya_python
        logs = out / "logs"
        tb = subprocess.run([python, "-c", TB_READER, str(logs), TB_TAGS[variant]], capture_output=True, text=True)
        if tb.returncode == 0 and tb.stdout.strip() not in ("", "[]"):
            per_step, loss_from = json.loads(tb.stdout), "tensorboard"
        elif variant == "kohya":
            per_step = []  # its postfix is a running mean, not a step's loss
        lora = next(iter(sorted(out.glob("*.safetensors"))), out / "missing.safetensors")
    tail = per_step[-4:]
    result.update(loss=statistics.mean(tail) if tail else None, loss_from=loss_from, losses=per_step)
    result["params"], result["modules"] = lora_file_stats(lora) if lora.exists() else (None, None)
    if variant == "kohya":
        found = next((m for m in map(KOHYA_MODULES.search, text) if m), None)
        result["log_modules"] = int(found[1]) if found else None
    return result


def fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def report(runs: dict[str, list[dict]], args: argparse.Namespace, shape: dict) -> None:
    med = {v: sorted(rs, key=lambda r: r["steps_per_s"])[len(rs) // 2] for v, rs in runs.items()}
    batch = args.batch
    rows = [
        ("steps/s (training loop, after warm-up)", lambda r: fmt(r["steps_per_s"], ".3f")),
        ("s/step", lambda r: fmt(1 / r["steps_per_s"], ".2f")),
        ("images/s", lambda r: fmt(batch * r["steps_per_s"], ".2f")),
        ("time to step 1 done (s)", lambda r: fmt(r["first_step_s"], ".1f")),
        (f"end-to-end, {shape['total_steps']} steps (s)", lambda r: fmt(r["total_s"], ".1f")),
        ("peak RSS (MiB)", lambda r: fmt(r["peak_rss_mb"], ".0f")),
        ("trainable params (LoRA file)", lambda r: fmt(r["params"], ",d")),
        ("LoRA modules (file)", lambda r: fmt(r["modules"], "d")),
        ("loss: mean of last 4 steps", lambda r: fmt(r["loss"], ".4f")),
        ("loss read from", lambda r: r["loss_from"]),
        ("mixed precision asked for", lambda r: r["precision"]),
    ]
    width = max(14, *(len(v) + 2 for v in med))
    print(f"\nmedian run of each variant ({args.rounds} round(s)):\n{'':40}" + "".join(f"{v:>{width}}" for v in med))
    for label, fn in rows:
        print(f"{label:40}" + "".join(f"{fn(r):>{width}}" for r in med.values()))
    for v, r in med.items():
        if r.get("note"):
            print(f"note: {v}: {r['note']}")
        if r.get("log_modules") is not None:
            print(f"note: kohya's log says 'create LoRA for U-Net: {r['log_modules']} modules'")
    publics = [v for v in PUBLIC if v in runs]
    ours = [v for v in runs if v.startswith("ours")]
    if publics and ours:
        print("\nper round: each ours-variant / the faster public trainer of that round (>1 = ours faster)")
        for i in range(args.rounds):
            fastest = max(publics, key=lambda p: runs[p][i]["steps_per_s"])
            quickest = min(publics, key=lambda p: runs[p][i]["total_s"])
            base, base_e2e = runs[fastest][i], runs[quickest][i]
            cells = [f"{v} {r['steps_per_s'] / base['steps_per_s']:.2f}x steps/s, "
                     f"{base_e2e['total_s'] / r['total_s']:.2f}x end-to-end"
                     for v in ours for r in [runs[v][i]]]
            print(f"  round {i + 1} (fastest loop: {fastest}, quickest end-to-end: {quickest}): " + "; ".join(cells))
        if args.rounds > 1:
            for v in ours:
                ratios = [runs[v][i]["steps_per_s"] / max(runs[p][i]["steps_per_s"] for p in publics)
                          for i in range(args.rounds)]
                print(f"  {v}: median steps/s ratio {statistics.median(ratios):.2f}x")
    pairs = [(v, p) for v, p in SAME_TARGETS if v in runs and p in runs]
    if pairs:
        print("same LoRA targets, steps/s per round (precision as in the table above):")
        for v, p in pairs:
            ratios = [runs[v][i]["steps_per_s"] / runs[p][i]["steps_per_s"] for i in range(args.rounds)]
            print(f"  {v} / {p}: " + ", ".join(f"{x:.2f}x" for x in ratios)
                  + (f"; median {statistics.median(ratios):.2f}x" if args.rounds > 1 else ""))
    print("\ncommand lines (round 1; env: " + " ".join(f"{k}={v}" for k, v in shape["env"].items())
          + ", HF_HOME=<a fresh folder per run>):")
    for v, rs in runs.items():
        tunables = f"GLIBC_TUNABLES={worker_malloc_tunables()} " if v.startswith("ours") else ""
        print(f"  {v}: (cd {shlex.quote(rs[0]['cwd'])} && {tunables}{shlex.join(rs[0]['cmd'])})")
        if "config" in rs[0]:
            print(f"    its config (parse_config, plus the model, images and output path): {json.dumps(rs[0]['config'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers", type=Path, help="a diffusers checkout (its examples/ folder is used)")
    ap.add_argument("--kohya", type=Path, help="a kohya-ss/sd-scripts checkout")
    ap.add_argument("--diffusers-python", help="the Python of the diffusers venv")
    ap.add_argument("--kohya-python", help="the Python of the sd-scripts venv")
    ap.add_argument("--ours-python", default=sys.executable, help="the Python with lora_studio (default: this one)")
    ap.add_argument("--full", action="store_true", help="256 px on a CPU, 512 px + bf16 on a GPU")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved runs of every variant")
    ap.add_argument("--steps", type=int, help="timed steps after the warm-up (quick 4, full 4 on a CPU, 20 on a GPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (quick 2, full 1 on a CPU, 3 on a GPU; >= 1)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--public-precision", choices=("no", "bf16", "fp16"),
                    help="--mixed_precision of both public scripts (default: no on a CPU, bf16 on a GPU)")
    ap.add_argument("--model-dir", type=Path, help="build the model here once, reuse it later (~4 GB)")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when the ours-python sees one")
    ap.add_argument("--resolution", type=int, help="default 64 quick, --full 256 (CPU) / 512 (GPU)")
    ap.add_argument("--images", type=int, help="default 16, --full on a CPU 8")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=4, help="alpha = rank (diffusers' example fixes that)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP/MKL threads of every child")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, LoRA files)")
    ap.add_argument("--verbose", action="store_true", help="echo the children's output")
    ap.add_argument("--child", choices=("prepare", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        (child_prepare if args.child == "prepare" else child_ours)(json.loads(args.spec.read_text()))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variants: {', '.join(sorted(set(variants) - set(VARIANTS)))}")
    for name in PUBLIC:
        if name in variants:
            if not getattr(args, name) or not getattr(args, f"{name}_python"):
                ap.error(f"the {name} variant needs --{name} PATH and --{name}-python PYTHON")
            script = getattr(args, name) / (DIFFUSERS_SCRIPT if name == "diffusers" else KOHYA_SCRIPT)
            if not script.exists():
                ap.error(f"{script} not found")
            setattr(args, name, getattr(args, name).resolve())
    work = Path(tempfile.mkdtemp(prefix="train-vs-public-"))
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}  # COLUMNS: rich's log lines unwrapped
    try:
        model = (args.model_dir or work / "model").resolve()
        # the device first (it sets the defaults), then the model and data for that resolution
        probe = subprocess.run([args.ours_python, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, check=True)
        device = args.device or ("cuda" if probe.stdout.strip() == "True" else "cpu")
        gpu = device == "cuda"
        resolution = args.resolution or ((512 if gpu else 256) if args.full else 64)
        steps = args.steps or (20 if gpu else 4)
        warmup = max(1, args.warmup if args.warmup is not None else (3 if gpu else 1 if args.full else 2))
        images = args.images or (8 if args.full and not gpu else 16)
        precision = args.public_precision or ("bf16" if gpu else "no")
        print(f"full SD1.5 architecture (random weights), {resolution} px, {images} images, batch {args.batch}, "
              f"rank {args.rank} / alpha {args.rank}, lr {args.lr:g}, {warmup} warm-up + {steps} timed steps, "
              f"device {device}, public --mixed_precision {precision}, {args.threads} threads, "
              f"{args.rounds} round(s); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        t = time.perf_counter()
        spec_path = work / "prepare.json"
        spec_path.write_text(json.dumps({"model_dir": str(model), "work": str(work), "images": images,
                                         "resolution": resolution}))
        prep = subprocess.run([args.ours_python, __file__, "--child", "prepare", "--spec", str(spec_path)],
                              env=dict(os.environ, **env), capture_output=True, text=True)
        lines = [x for x in prep.stdout.splitlines() if x.startswith("RESULT ")]
        if prep.returncode or not lines:
            raise SystemExit(f"preparing the model and data failed:\n{prep.stderr[-3000:]}")
        prepared = json.loads(lines[-1][len("RESULT "):])
        print(f"model {model} ({'built' if prepared['built_s'] > 1 else 'reused'}) and images ready in "
              f"{time.perf_counter() - t:.1f} s (not timed); ours-python torch {prepared['torch']}")
        shape = {"total_steps": warmup + steps, "env": env}
        ours_spec = {"base_model": str(model), "items": prepared["items"], "total_steps": warmup + steps,
                     "rank": args.rank, "alpha": float(args.rank), "learning_rate": args.lr,
                     "resolution": resolution, "batch_size": args.batch, "seed": args.seed, "device": device,
                     "mixed_precision": "no", "threads": args.threads}
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for round_no in range(1, args.rounds + 1):  # interleaved: a busy spell of the machine hits all alike
            for variant in variants:
                run = {"variant": variant, "round": round_no, "data": str(work / "data"), "model": str(model),
                       "tokenizers": str(work / "tokenizers"), "resolution": resolution,
                       "total_steps": warmup + steps, "warmup": warmup, "public_precision": precision,
                       "ours_spec": ours_spec}
                result = run_one(args, run, work, dict(os.environ, **env))
                runs[variant].append(result)
                print(f"  round {round_no}, {variant}: {result['steps_per_s']:.3f} steps/s, step 1 done at "
                      f"{result['first_step_s']:.1f} s, exit at {result['total_s']:.1f} s", flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        report(runs, args, shape)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
