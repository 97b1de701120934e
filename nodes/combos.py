"""Combo-typed outputs: a node output that links to a combo input of another node (Character Prompt's
`lora_name` to LoraLoader's `lora_name`, its sampler and scheduler to KSampler's).

How ComfyUI types them (0.3.64, read in its source): an output declared as a list of values is a combo output —
its V3 API types `io.Combo.Output` by its options, `/object_info` shows the list, and the frontend turns a list
into the slot type "COMBO", the type it gives every combo input, so the editor accepts the link. `/prompt`
(`execution.validate_inputs` → `comfy_execution.validation.validate_node_input`) compares the output's type
with the input's choices with `!=` first ("pre-union type extension behaviour of __ne__ overrides"); a plain
list passes only when it equals the input's list. `ComboOutput` is that list with `!=` answering whether every
value the output can produce is one of the input's choices, so it links to LoraLoader's lora_name whatever
else the loras folders hold, and not to a combo whose choices lack them (a checkpoint name)."""

from __future__ import annotations

from pathlib import Path

from ..core.samplers import KNOWN_SAMPLERS, KNOWN_SCHEDULERS
from .context import ready_studio


class ComboOutput(list):
    """The values a combo-typed output can produce; "equal" (for ComfyUI's `!=` type check) to a combo input
    whose choices include all of them."""

    def __ne__(self, other: object) -> bool:
        if isinstance(other, list | tuple):
            return not all(value in other for value in self)
        return True


def studio_loras(loras_dir: Path) -> list[str]:
    """The LoRA files the studio wrote (top level of its loras folder, which is ComfyUI's first loras folder
    unless the settings name another), as LoraLoader names them."""
    try:
        return sorted(p.name for p in loras_dir.iterdir()
                      if p.suffix == ".safetensors" and not p.name.startswith(".") and p.is_file())
    except OSError:
        return []


def lora_names() -> ComboOutput:
    s = ready_studio()
    return ComboOutput(studio_loras(s.host.loras_dir) if s is not None else [])


def sampler_lists() -> tuple[list[str], list[str]]:
    """KSampler's sampler_name and scheduler choices in this ComfyUI (custom nodes can add samplers);
    ComfyUI's standard lists outside it."""
    try:
        from comfy.samplers import KSampler
    except ImportError:
        return list(KNOWN_SAMPLERS), list(KNOWN_SCHEDULERS)
    return list(KSampler.SAMPLERS), list(KSampler.SCHEDULERS)


def sampler_names() -> ComboOutput:
    return ComboOutput(sampler_lists()[0])


def scheduler_names() -> ComboOutput:
    return ComboOutput(sampler_lists()[1])


def blocked(message: str):
    """The value of an output that cannot be produced: ComfyUI's ExecutionBlocker stops the nodes that use it,
    with `message` as their error, and leaves the node's other outputs and the rest of the graph alone. Outside
    ComfyUI's executor nothing consumes an output: None."""
    try:
        from comfy_execution.graph_utils import ExecutionBlocker
    except ImportError:
        return None
    return ExecutionBlocker(message)
