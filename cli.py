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

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """A flag per training option, from its description (training/config.py): --rank 8, --network-alpha 4 (kohya's
    name), --lr-scheduler {constant,...}, --compile / --no-compile. Not given: the model's default."""
    from .training import config

    options = p.add_argument_group("training options (default: the model's, as the panel and the API have them)")
    for name in config.USER_OPTIONS:
        o = config.option(name)
        flags = ["--" + n.replace("_", "-") for n in (name, *o.aliases)]
        text = f"{o.help} (default {config.default_text(name)})".replace("%", "%%")
        if o.kind == "bool":
            options.add_argument(*flags[:1], dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            options.add_argument(*flags, dest=name, type=_TYPES[o.kind], choices=o.choices, default=None, help=text,
                                 metavar=None if o.choices else name.upper())


def request_from_args(args: argparse.Namespace, base_model: str) -> Any:
    """The training request the flags make (a TrainRequest, checked like the API's)."""
    from .training import config
    from .training.request import TrainRequest

    given = {name: getattr(args, name) for name in config.USER_OPTIONS if getattr(args, name, None) is not None}
    return TrainRequest.check({"base_model": base_model, **given})


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a LoRA in the foreground (Ctrl-C cancels)",
                       description="Train a character's LoRA like the panel does, or run a worker config.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--character", help="<project>/<character> (slugs or names)")
    what.add_argument("--config", type=Path, help="a worker config JSON (see training/config.py)")
    p.add_argument("--base-model", dest="base_model", help="a model name from the list, or a path to a "
                   ".safetensors checkpoint or diffusers folder")
    add_option_flags(p)
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
    model = Path(args.base_model).expanduser()
    as_path = (model.is_absolute() or "/" in args.base_model or "\\" in args.base_model) and model.exists()
    try:  # the options are checked before anything is opened, as the API and the node check them
        request = request_from_args(args, model.name if as_path else args.base_model)
    except StudioError as e:
        print(f"lora_studio: {e.message}", file=sys.stderr)
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
        char = studio.characters.find(project, character)
        job = studio.training.start(char.id, request, model_path=model if as_path else None)
        watched["id"] = job.id
        print(f"training job {job.id}: {char.name} on {request.base_model} ({job.payload['steps']} steps)")

        def cancel(signum, _frame):
            line.show("cancelling…")
            threading.Thread(target=studio.jobs.cancel, args=(job.id,), daemon=True).start()

        previous = signal.signal(signal.SIGINT, cancel)
        try:
            job = studio.jobs.run_now(job.id)
        finally:
            signal.signal(signal.SIGINT, previous)
        line.end()
    except StudioError as e:
        line.end()
        print(f"lora_studio: {e.message}", file=sys.stderr)
        return 1
    finally:
        studio.close()
    if job.status == "succeeded":
        # the last progress line may have been skipped (one per second at most): the final figures, always
        print(progress_text(job.result.get("progress") or {}, job.payload["steps"], eta=False))
        print(f"wrote {job.result['file_name']} into {settings.effective_loras_dir}")
        return 0
    print(f"lora_studio: training {job.status}: {job.error or job.message}", file=sys.stderr)
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
