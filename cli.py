"""`python -m lora_studio train …`: train in the foreground with a progress line.

    python -m lora_studio train --character <project>/<character> --base-model <name or path> [--steps N …]
        the same job as the panel's (gates, data, recording of the LoRA), run in this process
    python -m lora_studio train --config job.json
        the worker's own JSON config (see training/config.py), run directly, in the environment a
        job's worker gets (training/worker_client.py: the Inductor cache in the data folder, ComfyUI's
        tokenizer when the host has one)

Ctrl-C cancels (the worker stops after its current step, nothing is written). Exit code 0 when a
LoRA was written, 1 otherwise, 2 for bad arguments or settings.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .core.host import Host
    from .core.settings import Settings

OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("steps", int, "optimiser steps (default 1500)"),
    ("rank", int, "LoRA rank (default 16)"),
    ("alpha", float, "LoRA alpha (default 8)"),
    ("learning_rate", float, "learning rate (default 1e-4)"),
    ("resolution", int, "training resolution (default 512 SD1.5, 1024 SDXL)"),
    ("batch_size", int, "batch size (default 1)"),
    ("seed", int, "random seed (default 0)"),
    ("device", str, "auto | cuda | cpu (default auto)"),
    ("sample_every", int, "sample image every N steps (0: never)"),
    ("checkpoint_every", int, "resumable checkpoint every N steps (0: never)"),
    ("lr_scheduler", str, "cosine | constant | constant_with_warmup"),
    ("warmup_steps", int, "warm-up steps"),
    ("min_snr_gamma", float, "min-SNR gamma (0: off)"),
    ("mixed_precision", str, "no | fp16 | bf16 (GPU)"),
)
FLAGS = ("train_text_encoder", "flip", "gradient_checkpointing", "compile")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a LoRA in the foreground (Ctrl-C cancels)",
                       description="Train a character's LoRA like the panel does, or run a worker config.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--character", help="<project>/<character> (slugs or names)")
    what.add_argument("--config", type=Path, help="a worker config JSON (see training/config.py)")
    p.add_argument("--base-model", dest="base_model", help="a model name from the list, or a path to a "
                   ".safetensors checkpoint or diffusers folder")
    for name, kind, text in OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    for name in FLAGS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=None)
    p.add_argument("--data", dest="data_dir", type=Path, help="data folder (default ./lora_studio_data)")
    p.add_argument("--models-dir", dest="models_dir", type=Path, help="base models for training")
    p.add_argument("--loras-dir", dest="loras_dir", type=Path, help="where trained LoRAs are written")
    p.add_argument("--database-url", dest="database_url", help="PostgreSQL DSN (default: SQLite in the data folder)")
    p.add_argument("--settings", type=Path, help="settings file (JSON or TOML)")
    return p


class ProgressLine:
    """One line rewritten in place on a terminal; a line per change (at most one per second) elsewhere."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self.last = ""
        self.last_at = 0.0

    def show(self, text: str, force: bool = False) -> None:
        import time

        if not text or text == self.last:
            return
        now = time.monotonic()
        if not self.tty and not force and now - self.last_at < 1.0:
            return
        self.last, self.last_at = text, now
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()


def main(args: argparse.Namespace) -> int:
    if args.config is not None:
        return run_config(args)
    return run_character(args)


def run_config(args: argparse.Namespace) -> int:
    """Run the worker on a config file, showing its progress; Ctrl-C stops it."""
    from .training.worker_client import TrainState, WorkerProcess, latent_cache_dir, worker_env

    config: Path = args.config
    if not config.is_file():
        print(f"lora_studio: no config file at {config}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    host = _host(settings)
    line = ProgressLine(sys.stdout)
    state = TrainState(total_steps=0, work=config.resolve().parent)
    stopping = threading.Event()

    def stop(signum, _frame):  # the worker stops at its next step (it got the terminal's SIGINT too)
        line.show("cancelling…", force=True)
        stopping.set()

    def on_event(event: dict) -> None:
        urgent = state.apply(event)
        line.show(state.message(), force=urgent)

    # the same environment as a job's worker in this data folder (stderr stays on the terminal)
    worker = WorkerProcess(config, worker_env(latent_cache_dir(settings.data_dir), host.clip_tokenizer_dir))
    previous = signal.signal(signal.SIGINT, stop)
    try:
        end = worker.run(on_event, stopping.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    line.end()
    if end.code == 0 and state.final is not None:
        print(f"wrote {state.final.get('output_path')}")
        return 0
    print(f"lora_studio: training {'cancelled' if state.phase.get('name') == 'cancelled' else 'failed'}"
          + (f": {state.error}" if state.error else f" (exit code {end.code})"), file=sys.stderr)
    return 1


def run_character(args: argparse.Namespace) -> int:
    from .core.errors import StudioError
    from .core.jobs import JOB_EVENT
    from .studio import Studio
    from .training.worker_client import progress_text

    if not args.base_model:
        print("lora_studio: --base-model is required with --character", file=sys.stderr)
        return 2
    project, _, character = (args.character or "").partition("/")
    if not project or not character:
        print("lora_studio: --character must be <project>/<character>", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings is None:
        return 2
    line = ProgressLine(sys.stdout)
    watched: dict[str, Any] = {"id": None}

    class Events:  # what the job runner reports, shown as the progress line
        def emit(self, event: str, data: dict) -> None:
            if event == JOB_EVENT and data.get("id") == watched["id"] and data.get("status") == "running":
                line.show(data.get("message") or "")

    try:
        studio = Studio(settings, _host(settings, Events()))
    except Exception as e:  # the database is down: one line, as `serve` says it
        from .core.ref import database_unreachable

        if (reason := database_unreachable(e)) is None:
            raise
        print(f"lora_studio: {reason}", file=sys.stderr)
        return 1
    try:
        body = {k: v for k, v in vars(args).items()
                if k in {n for n, _, _ in OPTIONS} | set(FLAGS) and v is not None}
        model = Path(args.base_model).expanduser()
        as_path = (model.is_absolute() or "/" in args.base_model or "\\" in args.base_model) and model.exists()
        char = studio.characters.find(project, character)
        body["base_model"] = model.name if as_path else args.base_model
        job = studio.training.start(char.id, body, model_path=model if as_path else None)
        watched["id"] = job["id"]
        print(f"training job {job['id']}: {char.name} on {body['base_model']} ({job['payload']['steps']} steps)")

        def cancel(signum, _frame):
            line.show("cancelling…")
            threading.Thread(target=studio.jobs.cancel, args=(job["id"],), daemon=True).start()

        previous = signal.signal(signal.SIGINT, cancel)
        try:
            job = studio.jobs.run_now(job["id"])
        finally:
            signal.signal(signal.SIGINT, previous)
        line.end()
    except StudioError as e:
        line.end()
        print(f"lora_studio: {e.message}", file=sys.stderr)
        return 1
    finally:
        studio.close()
    if job["status"] == "succeeded":
        # the last progress line may have been skipped (one per second at most): the final figures, always
        print(progress_text(job["result"].get("progress") or {}, job["payload"]["steps"], eta=False))
        print(f"wrote {job['result']['file_name']} into {settings.effective_loras_dir}")
        return 0
    print(f"lora_studio: training {job['status']}: {job['error'] or job['message']}", file=sys.stderr)
    return 1


def _settings(args: argparse.Namespace) -> Settings | None:
    """The settings from the command line, the environment and a settings file; None (said on stderr): bad."""
    from .core.errors import StudioError
    from .core.settings import load_settings

    cli = {k: getattr(args, k) for k in ("data_dir", "models_dir", "loras_dir", "database_url")}
    try:
        return load_settings(cli=cli, settings_file=args.settings)
    except StudioError as e:
        print(f"lora_studio: {e.message}", file=sys.stderr)
        return None


def _host(settings: Settings, events: Any = None) -> Host:
    """The host both kinds of run see (the standalone one): a `--config` run's worker gets what a job's would."""
    from .app import EventHub, standalone_host

    return standalone_host(settings, events if events is not None else EventHub())
