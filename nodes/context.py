"""The studio the nodes use, bound once by the ComfyUI entry point (`comfyui_host.attach`)."""

from __future__ import annotations

from ..core.errors import Unavailable

_ref = None


def bind_studio(ref) -> None:
    global _ref
    _ref = ref


def studio():
    if _ref is None:
        raise Unavailable("LoRA Studio is not attached to ComfyUI")
    return _ref.get()


def choices(fn, empty: str) -> list[str]:
    """Combo values read from the studio; a placeholder when it is not available (yet)."""
    try:
        values = fn(studio())
    except Exception:
        values = []
    return values or [empty]
