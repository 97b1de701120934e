"""The studio's side of the worker process (`training/worker.py`), used by the training job and by
`train --config`: the worker's environment (one function, so both get the same), starting it by
file path (it works both when the package is installed and when the folder only sits in ComfyUI's
custom_nodes/, any folder name), reading its JSON-lines events, keeping its stderr in a log file
with the last lines at hand, stopping it (SIGTERM, then a kill after a grace period), and the
event model (`TrainState`) with the progress line it shows."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .clip_tokenizer import TOKENIZER_ENV

log = logging.getLogger("lora_studio.training.worker_client")

WORKER = Path(__file__).resolve().parent / "worker.py"
CANCEL_GRACE_SECONDS = 300  # a full-size step on a CPU can take minutes; then it is killed
LOG_TAIL_LINES = 40
# glibc's malloc hands large freed blocks back to the kernel and maps them afresh at the next step: every step of
# a CPU training then page-faults its activations in again (~190,000 faults and 0.3 s of system time per full-size
# SD1.5 step at 256 px here). Keeping freed memory in the heap (large blocks from the heap, no trimming) removes
# them: steps 5-8 % faster on this project's 2-core machine, the same peak memory. Other C libraries ignore it.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def latent_cache_dir(data_dir: Path) -> Path:
    """The studio's latent cache in its data folder (torch.compile's kernels go beside it, see `worker_env`)."""
    return data_dir / "cache" / "latents"


def worker_env(cache_dir: Path, clip_tokenizer_dir: Path | None) -> dict[str, str]:
    """The worker's environment: offline Hugging Face, unbuffered output, ComfyUI's tokenizer files
    (single-file checkpoints carry none) and Inductor's cache folder next to the latent cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if clip_tokenizer_dir is not None:
        env.setdefault(TOKENIZER_ENV, str(clip_tokenizer_dir))
    # torch.compile's kernels next to the latent cache, kept across reboots. Always set: a host process that
    # touched Inductor (ComfyUI does) has written Inductor's /tmp default into its own environment.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "torch_compile")
    if "GLIBC_TUNABLES" not in env:  # the user's own settings win
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    return env


@dataclass
class WorkerExit:
    code: int
    stopped: bool = False  # `should_stop` said so: the worker was asked to stop (or killed after the grace)
    log_tail: list[str] = field(default_factory=list)  # its last stderr lines (none when stderr was not kept)


class WorkerProcess:
    """One run of the worker on a config file. `log_path`: where its stderr goes (None: this process's
    own stderr, e.g. the terminal of `train --config`). `cwd`: its working folder (None: this one's)."""

    def __init__(self, config_path: Path, env: dict[str, str], log_path: Path | None = None, *,
                 cwd: Path | None = None, grace_seconds: float = CANCEL_GRACE_SECONDS):
        self.config_path = config_path
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.grace_seconds = grace_seconds
        self.stopped = False

    def run(self, on_event: Callable[[dict], None], should_stop: Callable[[], bool], *,
            on_start: Callable[[int], None] | None = None) -> WorkerExit:
        """Start the worker, hand each event to `on_event` until it ends, and return how it ended.
        `should_stop` is asked about once a second (from another thread); `on_start` gets the pid."""
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        log_file = open(self.log_path, "w", encoding="utf-8") if self.log_path is not None else None  # noqa: SIM115
        try:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(self.config_path)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE if log_file is not None else None, text=True,
                                    env=self.env, cwd=str(self.cwd) if self.cwd is not None else None)
            try:
                if on_start is not None:
                    on_start(proc.pid)
                err_thread = None
                if log_file is not None:
                    err_thread = threading.Thread(target=_drain, args=(proc.stderr, log_file, tail), daemon=True)
                    err_thread.start()
                threading.Thread(target=self._watch, args=(proc, should_stop), daemon=True).start()
                for line in proc.stdout:
                    event = parse_event(line)
                    if event is not None:
                        on_event(event)
                code = proc.wait()
                if err_thread is not None:
                    err_thread.join(5)
            finally:
                if proc.poll() is None:  # the caller failed while reading: no worker left behind, alone on the GPU
                    proc.kill()
                    proc.wait()
        finally:
            if log_file is not None:
                log_file.close()
        return WorkerExit(code=code, stopped=self.stopped, log_tail=list(tail))

    def _watch(self, proc: subprocess.Popen, should_stop: Callable[[], bool]) -> None:
        while proc.poll() is None:
            try:
                if should_stop():
                    self.stopped = True
                    proc.send_signal(signal.SIGTERM)  # the worker stops after its current step
                    try:
                        proc.wait(self.grace_seconds)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    return
            except Exception:  # database hiccup: keep watching
                log.exception("cancel watch failed")
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass


def parse_event(line: str) -> dict | None:
    """One JSON-lines event of the worker's stdout; None for anything else it printed."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _drain(stream: TextIO, log_file: TextIO, tail: deque) -> None:
    for line in stream:
        log_file.write(line)
        log_file.flush()
        tail.append(line.rstrip())


LOSS_POINTS = 400


class TrainState:
    """What the worker's events say so far; `snapshot()` is stored as the job's result while it runs
    (progress record, samples, last checkpoint), so the panel and the node read one place."""

    def __init__(self, total_steps: int, work: Path, resumed_from_job: int | None = None):
        self.total_steps = total_steps
        self.work = work
        self.resumed_from_job = resumed_from_job
        self.pid: int | None = None
        self.phase: dict = {"name": "starting"}
        self.progress: dict = {"step": 0, "total_steps": total_steps}
        self.samples: list[dict] = []
        self.checkpoint: dict | None = None
        self.arch: str | None = None
        self.resume_step = 0
        self.final: dict | None = None
        self.error: str | None = None
        self.warnings: list[str] = []
        self.loss_history: list[list[float]] = []  # [[step, loss], ...] for the panel's chart, thinned as it grows

    def apply(self, event: dict) -> bool:
        """Take one event in; True when it should reach the job at once (not throttled)."""
        kind = event.get("event")
        if kind == "start":
            self.total_steps = event_int(event.get("total_steps"), self.total_steps)
            self.resume_step = event_int(event.get("resume_step"), 0)
            self.arch = event.get("arch") or self.arch
            self.progress = {"step": self.resume_step, "total_steps": self.total_steps}
            return True
        if kind == "phase":
            self.phase = {"name": str(event.get("name", "")), "done": event_int(event.get("done"), 0),
                          "total": event_int(event.get("total"), 0)}
            return self.phase["done"] in (0, self.phase["total"])
        if kind == "progress":
            self.total_steps = event_int(event.get("total_steps"), self.total_steps) or self.total_steps
            self.progress = {"step": event_int(event.get("step"), 0), "total_steps": self.total_steps,
                             **{k: float(event[k]) for k in ("loss", "smooth_loss", "it_s", "eta_s", "lr")
                                if isinstance(event.get(k), int | float) and not isinstance(event.get(k), bool)}}
            loss = self.progress.get("smooth_loss", self.progress.get("loss"))
            if loss is not None:
                self._add_loss(self.progress["step"], loss)
            if self.phase.get("name") != "training":
                self.phase = {"name": "training"}
            return False
        if kind == "sample":
            self._add_sample(event)
            return True
        if kind == "checkpoint":
            self.checkpoint = {"step": event_int(event.get("step"), 0), "path": str(event.get("path", ""))}
            return True
        if kind == "done":
            self.final = event
            self.phase = {"name": "done"}
            self.progress["step"] = self.total_steps
            return True
        if kind == "error":
            self.error = str(event.get("message") or "training failed")
            return True
        if kind == "cancelled":
            self.phase = {"name": "cancelled"}
            return True
        if kind == "warning":
            message = str(event.get("message") or "")[:500]
            if message and message not in self.warnings and len(self.warnings) < 20:
                self.warnings.append(message)
                log.warning("training: %s", message)
            return True
        return False

    def _add_loss(self, step: int, loss: float) -> None:
        """Keep at most LOSS_POINTS points: past that, every other one goes (the curve keeps its shape, the
        newest point stays), so a 10,000-step run stores a few KB on its job."""
        if self.loss_history and step <= self.loss_history[-1][0]:
            return
        self.loss_history.append([step, round(loss, 6)])
        if len(self.loss_history) > LOSS_POINTS:
            self.loss_history = self.loss_history[-1::-2][::-1]

    def _add_sample(self, event: dict) -> None:
        """Keep the sample inside the job's samples folder (copied there when the worker wrote it elsewhere)."""
        src = Path(str(event.get("path", "")))
        if not src.is_absolute():
            src = self.work / src
        if not src.is_file():
            log.warning("sample image %s does not exist", src)
            return
        folder = (self.work / "samples").resolve()
        step = event_int(event.get("step"), 0)
        if src.resolve().parent != folder or not re.fullmatch(r"[A-Za-z0-9._-]+", src.name):
            dest = folder / f"step-{step:06d}{src.suffix.lower() or '.png'}"
            shutil.copyfile(src, dest)
            src = dest
        self.samples = [s for s in self.samples if s["file"] != src.name]
        self.samples.append({"step": step, "file": src.name, "prompt": str(event.get("prompt", ""))})

    def fraction(self) -> float:
        n = self.total_steps or 1
        return max(0.0, min(1.0, self.progress.get("step", 0) / n))

    def message(self) -> str:
        name = self.phase.get("name")
        labels = {"starting": "starting the training process", "loading": "loading the base model",
                  "caching": "caching latents", "compiling": "compiling the UNet (torch.compile)",
                  "saving": "saving the LoRA"}
        if name in labels:
            label = labels[name]
            total = self.phase.get("total") or 0
            return f"{label} {self.phase.get('done', 0)}/{total}" if total else label
        return progress_text(self.progress, self.total_steps, eta=name == "training")

    def snapshot(self) -> dict:
        return {"progress": dict(self.progress), "phase": dict(self.phase), "samples": list(self.samples),
                "checkpoint": self.checkpoint, "arch": self.arch, "resume_step": self.resume_step,
                "warnings": list(self.warnings), "loss_history": [list(p) for p in self.loss_history],
                "resumed_from_job": self.resumed_from_job, "pid": self.pid}


def progress_text(p: dict, total_steps: int, *, eta: bool = True) -> str:
    """`step 420/1500 · loss 0.0913 · 2.41 it/s · ETA 7m 28s` from a worker's progress record."""
    parts = [f"step {p.get('step', 0)}/{p.get('total_steps', total_steps)}"]
    loss = p.get("smooth_loss", p.get("loss"))
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if p.get("it_s"):
        parts.append(f"{p['it_s']:.2f} it/s")
    if eta and p.get("eta_s") is not None:
        parts.append(f"ETA {format_seconds(p['eta_s'])}")
    return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def event_int(value: Any, default: int) -> int:
    """A number from a worker event as an int (`default` for anything else, booleans included)."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
