"""LoRA Studio training worker, run as ``[sys.executable, "<pack>/training/worker.py", "<config.json>"]``.

Config (JSON object): ``base_model`` (SD1.5 or SDXL: a single-file ``.safetensors`` checkpoint or a diffusers
folder), ``items`` ([{"image": absolute path, "caption": str}]), ``output_path`` (absolute, new ``.safetensors``);
every other field (training/config.py's ``TrainConfig`` describes each) is optional and gets the defaults the API
gives for the model's architecture (kohya's names network_dim / network_alpha / conv_dim are aliases; the
checkpoints and samples go to checkpoints/ and samples/ beside the file). Unknown fields are logged and ignored;
JSON null means "not given".

Protocol: JSON objects, one per line, on STDOUT only (human logs go to stderr)::

    {"event": "start", "total_steps": N, "arch": "sd15"|"sdxl", "resume_step": k}
    {"event": "phase", "name": "loading"|"caching"|"training"|"compiling"|"saving", "done": i, "total": n}
    {"event": "progress", "step": i, "total_steps": N, "loss": f, "smooth_loss": f, "it_s": f, "eta_s": f, "lr": f}
    {"event": "warning", "message": str}                                  (the run goes on, e.g. without torch.compile)
    {"event": "sample", "step": i, "path": "<absolute png>", "prompt": str}
    {"event": "checkpoint", "step": i, "path": "<absolute step-<i> folder>"}
    {"event": "done", "output_path": str, "sha256": hex, "num_modules": M, "rank": r, "alpha": a, "arch": str,
     "compiled": bool}                                                    (the steps ran through torch.compile)
    {"event": "error", "message": str}                                    (exit code 1)
    {"event": "cancelled"}                                                (after SIGTERM/SIGINT, exit 128+signal)

Progress steps are optimizer steps (k+1..N after a resume from step k). The step that compiles the UNet
(``compile``: phase "compiling" around it) reports no it_s / eta_s; the speed counts from the next step.

The script works without the pack being importable (e.g. ``custom_nodes/lora-studio``): it registers
a synthetic package whose ``__path__`` is the pack root and imports ``training.*`` through it,
without executing the pack's root ``__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import logging
import math
import os
import signal
import sys
import types
from pathlib import Path
from typing import IO, Any

PACKAGE_ALIAS = "_lora_studio_worker_pack"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CANCELLED = 128 + 15


def bootstrap_package(root: Path | None = None) -> str:
    """Register a synthetic package for the pack root (its ``__init__.py`` is NOT executed)."""
    if PACKAGE_ALIAS not in sys.modules:
        root = root or Path(__file__).resolve().parent.parent
        spec = importlib.machinery.ModuleSpec(PACKAGE_ALIAS, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
        package = types.ModuleType(PACKAGE_ALIAS, "LoRA Studio pack root (worker bootstrap)")
        package.__spec__ = spec
        package.__path__ = [str(root)]
        package.__package__ = PACKAGE_ALIAS
        sys.modules[PACKAGE_ALIAS] = package
    return PACKAGE_ALIAS


if __package__:  # imported as lora_studio.training.worker (or any package name)
    from .config import load_config
    from .errors import TrainingCancelled, TrainingError
else:  # run as a script: reach the sibling modules through the synthetic package
    load_config = importlib.import_module(f"{bootstrap_package()}.training.config").load_config
    _errors = importlib.import_module(f"{bootstrap_package()}.training.errors")
    TrainingCancelled, TrainingError = _errors.TrainingCancelled, _errors.TrainingError

log = logging.getLogger("lora_studio.training.worker")


# --------------------------------------------------------------------------- protocol


class Protocol:
    """Writes one JSON object per line and flushes, so the studio sees each event at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: str, **fields: Any) -> None:
        fields = {key: _finite(value) for key, value in fields.items()}
        line = json.dumps({"event": event, **fields}, allow_nan=False)
        self.stream.write(line + "\n")
        self.stream.flush()


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: a not-yet-known number (ETA before the first step) is sent as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class StopFlag:
    """Signal handler target: records the first stop signal; the trainer polls it every step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("received signal %d: stopping at the next step, nothing will be saved", signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else EXIT_CANCELLED


def install_signal_handlers(flag: StopFlag) -> None:
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, flag.handle)


def claim_stdout() -> IO[str]:
    """Keep the real stdout for protocol lines; anything else printed to stdout (Python or C) goes to stderr."""
    sys.stdout.flush()
    try:
        protocol_fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")
    except (OSError, ValueError):
        return sys.stdout
    sys.stdout = sys.stderr
    return stream


def _configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "DIFFUSERS_NO_ADVISORY_WARNINGS"):
        os.environ.setdefault(name, "1")


def import_trainer() -> types.ModuleType:
    """The sibling ``trainer`` module (import-light; torch and friends load inside ``train``)."""
    try:
        package = __package__ or f"{bootstrap_package()}.training"
        trainer = importlib.import_module(".trainer", package)
    except Exception as exc:
        log.exception("cannot import the trainer")
        raise TrainingError(f"the LoRA Studio training code cannot be loaded: {type(exc).__name__}: {exc}") from exc
    log.info("trainer loaded from %s", trainer.__file__)
    return trainer


def run(config_path: Path, protocol: Protocol, stop: StopFlag) -> int:
    """Validate, train, report; returns the process exit code."""
    try:
        config = load_config(config_path)
        if config.compile and config.cache_dir is not None:  # Inductor's compiled kernels, kept for the next run
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(config.cache_dir / "torch_compile"))
        trainer = import_trainer()
        trainer.check_dependencies()
        if stop():
            raise TrainingCancelled()
        result = trainer.train(config, on_event=protocol.emit, should_stop=stop)
    except TrainingCancelled:
        log.warning("training cancelled; no LoRA was written")
        protocol.emit("cancelled")
        return stop.exit_code
    except TrainingError as exc:
        log.error("training failed: %s", exc)
        protocol.emit("error", message=str(exc))
        return EXIT_ERROR
    except Exception as exc:
        log.exception("training crashed")
        protocol.emit("error", message=f"training failed unexpectedly: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    protocol.emit(
        "done",
        output_path=str(result.output_path),
        sha256=result.sha256,
        num_modules=result.num_modules,
        rank=result.rank,
        alpha=result.alpha,
        arch=result.arch,
        compiled=result.compiled,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stop = StopFlag()
    install_signal_handlers(stop)
    protocol = Protocol(claim_stdout())
    _configure_logging()
    if len(args) != 1:
        protocol.emit("error", message="usage: python training/worker.py <config.json>")
        return EXIT_ERROR
    return run(Path(args[0]), protocol, stop)


if __name__ == "__main__":
    _here = str(Path(__file__).resolve().parent)
    if sys.path and sys.path[0] and str(Path(sys.path[0]).resolve()) == _here:
        sys.path.pop(0)  # keep training/*.py from shadowing top-level modules named errors, kohya, ...
    sys.exit(main())
