"""`python -m lora_studio serve …` (standalone studio), `… migrate`, and `… train` (see cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
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
    from .cli import add_parser as add_train_parser

    add_train_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from .cli import main as train_main

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
        from .core.redact import register_secrets
        from .core.ref import database_unreachable

        register_secrets(settings.secret_values())  # scrubbed from the one line below
        try:
            version = Database(settings.effective_database_url).migrate()
        except Exception as e:
            reason = database_unreachable(e)
            if reason is None:
                raise
            print(f"lora_studio: {reason}", file=sys.stderr)
            return 1
        print(f"database at schema version {version}")
        return 0
    import asyncio

    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:  # where the loop has no signal handlers (Windows)
        return 0


def listen(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to (all interfaces when empty), bound the way
    asyncio binds them; raises OSError (port taken, unknown host, no permission) before anything starts."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _os_reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


async def _serve(settings) -> int:
    """Listen, build the studio (database, migrations, job runner), and only then say where it runs.
    A failed start prints one line to stderr and exits 1 (inside ComfyUI the same failure is a 503)."""
    import asyncio
    import signal

    from aiohttp import web

    from .app import STUDIO_KEY, create_app

    where = f"{settings.host}:{settings.port}"
    try:
        socks = listen(settings.host, settings.port)  # first: a taken port fails before the database is touched
    except OSError as e:
        print(f"lora_studio: cannot listen on {where}: {_os_reason(e)}", file=sys.stderr, flush=True)
        return 1
    app = create_app(settings)
    ref = app[STUDIO_KEY]
    ref.log_failures = False  # reported here, as one line
    runner = web.AppRunner(app)
    try:
        await runner.setup()  # runs the app's on_startup: builds the studio
        if ref.error is not None:
            if ref.failure is not None and not _expected(ref.failure):
                logging.getLogger("lora_studio").error("start-up failed", exc_info=ref.failure)
            print(f"lora_studio: {ref.error}", file=sys.stderr, flush=True)
            return 1
        for sock in socks:
            await web.SockSite(runner, sock).start()
        port = socks[0].getsockname()[1]  # the real one when --port 0 asked for any
        print(f"LoRA Studio on http://{settings.host}:{port}/ (data: {settings.data_dir})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
                pass
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()
        for sock in socks:
            sock.close()


def _expected(failure: BaseException) -> bool:
    from .core.ref import describe_failure

    return describe_failure(failure)[1]


if __name__ == "__main__":
    sys.exit(main())
