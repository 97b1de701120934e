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


def ready_studio() -> Studio | None:
    """The studio if it has started, without waiting or starting it: for what ComfyUI may read at any time
    (a node's output types), where building the studio early would open the database while ComfyUI loads."""
    ready = getattr(_ref, "ready", None)
    if _ref is None or (ready is not None and not ready()):
        return None
    try:
        return _ref.get()
    except Unavailable:
        return None


def choices(fn: Callable[[Studio], list[str]], empty: str) -> list[str]:
    """Combo values read from the studio; a placeholder when it is not available (yet)."""
    try:
        values = fn(studio())
    except Exception:
        values = []
    return values or [empty]


class classproperty:  # noqa: N801 - reads like the attribute it replaces
    """A class attribute computed each time it is read (on the class or an instance): ComfyUI reads a node's
    RETURN_TYPES on both, and a combo-typed output's choices change while ComfyUI runs."""

    def __init__(self, fn: Callable[[type], object]):
        self.fn = fn

    def __get__(self, obj: object, owner: type) -> object:
        return self.fn(owner)
