"""The studio the nodes use, bound once by the ComfyUI entry point (`comfyui_host.attach`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.errors import Unavailable

if TYPE_CHECKING:  # a types-only reference to the composition root: nodes call its typed services
    from ..core.ref import StudioRef
    from ..studio import Studio

_ref: StudioRef[Studio] | None = None


def bind_studio(ref: StudioRef[Studio]) -> None:
    global _ref
    _ref = ref


def studio() -> Studio:
    if _ref is None:
        raise Unavailable("LoRA Studio is not attached to ComfyUI")
    return _ref.get()


def choices(fn: Callable[[Studio], list[str]], empty: str) -> list[str]:
    """Combo values read from the studio; a placeholder when it is not available (yet)."""
    try:
        values = fn(studio())
    except Exception:
        values = []
    return values or [empty]
