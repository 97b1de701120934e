"""Fills the Host interface from ComfyUI (folder_paths, PromptServer) and attaches the studio:
routes on `PromptServer.instance.routes`, events through ComfyUI's websocket, nodes bound."""

from __future__ import annotations

import logging
from pathlib import Path

from .core.host import Host
from .core.redact import install_log_filter, register_secrets
from .core.settings import load_settings

log = logging.getLogger("lora_studio.comfyui")


def comfyui_host(settings_output: Path | None = None) -> Host:
    import folder_paths
    from server import PromptServer

    server = PromptServer.instance

    def url() -> str:
        address = getattr(server, "address", "127.0.0.1") or "127.0.0.1"
        if address in ("0.0.0.0", "::", ""):
            address = "127.0.0.1"
        if ":" in address:
            address = f"[{address}]"
        return f"http://{address}:{getattr(server, 'port', 8188)}"

    def emit(event: str, data: dict) -> None:
        server.send_sync(event, data)

    def diffusers_dirs() -> list[Path]:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths("diffusers")]
        except (KeyError, AttributeError):
            return []

    def checkpoint_dirs() -> list[Path]:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths("checkpoints")]
        except (KeyError, AttributeError):
            return []

    dirs = diffusers_dirs()
    return Host(
        kind="comfyui",
        loras_dir=Path(folder_paths.get_folder_paths("loras")[0]),
        output_dir=settings_output or Path(folder_paths.get_output_directory()),
        models_dir=dirs[0] if dirs else Path(folder_paths.models_dir) / "diffusers",
        comfyui_url=url,
        emit=emit,
        extra_model_dirs=lambda: diffusers_dirs()[1:],
        checkpoint_dirs=checkpoint_dirs,
        comfyui_shares_device=True,
        clip_tokenizer_dir=_sd1_tokenizer(folder_paths),
    )


def _sd1_tokenizer(folder_paths) -> Path | None:
    """`<ComfyUI>/comfy/sd1_tokenizer`, found from ComfyUI itself (the pack may be a symlink living elsewhere)."""
    folder = Path(getattr(folder_paths, "base_path", "")) / "comfy" / "sd1_tokenizer"
    return folder if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file() else None


def attach() -> None:
    """Register routes and nodes now (cheap); read settings (possibly from Vault) and open the
    database when ComfyUI's server starts."""
    import folder_paths
    from server import PromptServer

    from .core.ref import StudioRef
    from .nodes import bind_studio
    from .server_routes import build_api
    from .server_routes.api import register_routes

    default_data = Path(folder_paths.get_user_directory()) / "lora_studio"

    def build():
        from .studio import Studio

        settings = load_settings(default_data_dir=default_data)
        register_secrets(settings.secret_values())
        install_log_filter()
        host = comfyui_host(settings.comfyui_output_dir)
        if settings.loras_dir is not None:  # else ComfyUI's loras folder: LoraLoader lists new LoRAs at once
            host.loras_dir = settings.loras_dir
        studio = Studio(settings, host)
        log.info("LoRA Studio attached to ComfyUI (data %s)", settings.data_dir)
        return studio

    ref = StudioRef(build)
    register_routes(PromptServer.instance.routes, ref, build_api())
    bind_studio(ref)
    _build_when_started(PromptServer.instance, ref)


def _build_when_started(server, ref) -> None:
    """Open the database once ComfyUI's server starts, in a background thread. Not earlier:
    ComfyUI imports SQLAlchemy itself right after loading custom nodes, and importing a package
    from two threads at once can leave it half-initialised (seen in a real ComfyUI)."""
    app = getattr(server, "app", None)
    if app is None or app.frozen:
        ref.build_in_background()
        return

    async def on_startup(_app) -> None:
        ref.build_in_background()

    app.on_startup.append(on_startup)
