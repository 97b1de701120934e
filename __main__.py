"""`python -m lora_studio serve …` (standalone studio), `… migrate`, and `… train` (see training/cli.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora_studio", description="LoRA Studio")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the standalone studio (web panel + API)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8401)")
    serve.add_argument("--data", dest="data_dir", type=Path, help="data folder (default ./lora_studio_data)")
    serve.add_argument("--comfyui-url", dest="comfyui_url", help="ComfyUI server for generation")
    serve.add_argument("--comfyui-output", dest="comfyui_output_dir", type=Path, help="ComfyUI output folder (gallery)")
    serve.add_argument("--loras-dir", dest="loras_dir", type=Path, help="where trained LoRAs are written")
    serve.add_argument("--models-dir", dest="models_dir", type=Path, help="base models for training")
    serve.add_argument("--database-url", dest="database_url", help="PostgreSQL DSN (default: SQLite in the data folder)")
    serve.add_argument("--settings", type=Path, help="settings file (JSON or TOML)")
    sub.add_parser("migrate", help="apply database migrations and exit").add_argument(
        "--data", dest="data_dir", type=Path)
    from .training.cli import add_parser as add_train_parser

    add_train_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from .training.cli import main as train_main

        return train_main(args)
    from .core.errors import StudioError
    from .core.settings import load_settings

    cli = {k: v for k, v in vars(args).items() if k not in ("command", "settings")}
    try:
        settings = load_settings(cli=cli, settings_file=getattr(args, "settings", None))
    except StudioError as e:
        print(f"lora_studio: {e.message}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        from .core.db import Database

        version = Database(settings.effective_database_url).migrate()
        print(f"database at schema version {version}")
        return 0
    from aiohttp import web

    from .app import create_app

    print(f"LoRA Studio on http://{settings.host}:{settings.port}/ (data: {settings.data_dir})", flush=True)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
