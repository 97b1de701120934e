"""ComfyUI's sampler and scheduler names, and the check of a generation style's choice against them.

The names come from the ComfyUI the studio talks to (KSampler's `sampler_name` and `scheduler`
combos in its `/object_info/KSampler`: custom nodes can add samplers), fetched with a short timeout and
cached briefly; while it does not answer, from the lists of a real ComfyUI 0.3.64 below (the
`object_info.json` in tests/fixtures/comfyui, which a test compares them with)."""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidInput, StudioError

# Sampler names as the original system (and A1111-style UIs) show them -> ComfyUI (sampler, scheduler).
HUMAN_SAMPLERS: dict[str, tuple[str, str]] = {
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", "karras"),
    "DPM++ 2S a Karras": ("dpmpp_2s_ancestral", "karras"),
    "DPM++ SDE Karras": ("dpmpp_sde", "karras"),
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
}
_HUMAN_BY_KEY = {" ".join(name.lower().split()): pair for name, pair in HUMAN_SAMPLERS.items()}
_COMFY_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")  # ComfyUI's sampler/scheduler identifiers


def resolve_sampler(sampler: str, scheduler: str | None = None) -> tuple[str, str]:
    """(ComfyUI sampler_name, scheduler) for a ComfyUI sampler name or a human name ("Euler a").

    A human name carries its own scheduler, which wins over `scheduler`; a ComfyUI sampler name is
    used with `scheduler` as given (default "normal").
    """
    if not isinstance(sampler, str) or not sampler.strip():
        raise InvalidInput("A sampler is required, e.g. 'euler' or 'DPM++ 2M Karras'.")
    name = sampler.strip()
    if not _COMFY_NAME.match(name):  # ComfyUI names ("euler", "ddim") first, then human ones ("Euler", "DDIM")
        human = _HUMAN_BY_KEY.get(" ".join(name.lower().split()))
        if human is not None:
            return human
        known = ", ".join(repr(n) for n in HUMAN_SAMPLERS)
        raise InvalidInput(f"Unknown sampler {sampler!r}: use a ComfyUI sampler name such as 'euler' "
                           f"or 'dpmpp_2m', or one of {known}.")
    if scheduler is None or (isinstance(scheduler, str) and not scheduler.strip()):
        return name, "normal"
    if not isinstance(scheduler, str) or not _COMFY_NAME.match(scheduler.strip()):
        raise InvalidInput(f"Unknown scheduler {scheduler!r}: use a ComfyUI scheduler name such as "
                           "'normal' or 'karras'.")
    return name, scheduler.strip()


def _choices(spec: list) -> list | None:
    """The allowed values of a combo input, or None when the input is not a combo."""
    type_ = spec[0] if spec else None
    if isinstance(type_, list):
        return type_
    if type_ == "COMBO":
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        choices = options.get("options")
        return list(choices) if isinstance(choices, list) else []
    return None


def combo_choices(object_info: Mapping[str, Any], node_class: str, input_name: str) -> list | None:
    """The choices of a node's combo input in an /object_info answer (either spelling: a list as the
    type, or "COMBO" with options), or None when the node, the input or a list of choices is missing."""
    node = object_info.get(node_class)
    inputs = node.get("input") if isinstance(node, Mapping) else None
    if not isinstance(inputs, Mapping):
        return None
    for category in ("required", "optional"):
        spec = (inputs.get(category) or {}).get(input_name)
        if isinstance(spec, list) and spec:
            names = [c for c in _choices(spec) or [] if isinstance(c, str)]
            return names or None
    return None

log = logging.getLogger("lora_studio.samplers")

KNOWN_SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
KNOWN_SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)

_HUMAN = {" ".join(name.lower().split()): name for name in HUMAN_SAMPLERS}


class SamplerNames:
    """The sampler and scheduler names one ComfyUI offers.

    `client` makes a ComfyUI client (the studio's). A list fetched from ComfyUI is kept `ttl`
    seconds; when ComfyUI does not answer within `timeout` seconds, the known lists are used for
    `retry` seconds before asking again, so an unreachable ComfyUI costs one short wait now and then,
    not one per request."""

    def __init__(self, client: Callable[[], Any] | None = None, *, ttl: float = 300.0, retry: float = 30.0,
                 timeout: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.client, self.ttl, self.retry, self.timeout, self.clock = client, ttl, retry, timeout, clock
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, ...], tuple[str, ...], str] | None = None
        self._until = 0.0

    def lists(self) -> dict:
        """{"samplers", "schedulers", "source": "comfyui" | "known", "human": {name: [sampler, scheduler]}}."""
        samplers, schedulers, source = self._lists()
        return {"samplers": list(samplers), "schedulers": list(schedulers), "source": source,
                "human": {name: list(pair) for name, pair in HUMAN_SAMPLERS.items()}}

    def _lists(self) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        with self._lock:  # one fetch at a time; the others wait for its answer
            now = self.clock()
            if self._cached is None or now >= self._until:
                fetched = self._fetch()
                if fetched is not None:
                    self._cached, self._until = (*fetched, "comfyui"), now + self.ttl
                else:
                    self._cached, self._until = (KNOWN_SAMPLERS, KNOWN_SCHEDULERS, "known"), now + self.retry
            return self._cached

    def _fetch(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        if self.client is None:
            return None
        try:
            info = self.client().object_info("KSampler", timeout=self.timeout)
        except StudioError as e:
            log.info("sampler names: ComfyUI did not answer (%s); using the known lists", e.message)
            return None
        samplers = combo_choices(info, "KSampler", "sampler_name")
        schedulers = combo_choices(info, "KSampler", "scheduler")
        if not samplers or not schedulers:
            log.warning("sampler names: ComfyUI's /object_info/KSampler has no sampler/scheduler lists; "
                        "using the known lists")
            return None
        return tuple(samplers), tuple(schedulers)

    def check(self, sampler: Any, scheduler: Any = None) -> tuple[str, str]:
        """(sampler_name, scheduler) as ComfyUI spells them, for a ComfyUI name or a human one
        ("DPM++ 2M Karras", which brings its scheduler); InvalidInput naming close matches otherwise."""
        samplers, schedulers, source = self._lists()
        where = "" if source == "comfyui" else " (its standard list: ComfyUI did not answer)"
        try:
            name, sched = resolve_sampler(sampler, scheduler)
        except InvalidInput:
            if not isinstance(sampler, str) or not sampler.strip():
                raise  # no sampler at all
            if not _resolves(sampler):  # neither a ComfyUI-shaped name nor a human one
                raise InvalidInput(_unknown("sampler", sampler, samplers, where, human=True)) from None
            raise InvalidInput(_unknown("scheduler", scheduler, schedulers, where)) from None
        if name not in samplers:
            raise InvalidInput(_unknown("sampler", sampler, samplers, where, human=True))
        if sched not in schedulers:
            raise InvalidInput(_unknown("scheduler", scheduler, schedulers, where))
        return name, sched


def _resolves(sampler: str) -> bool:
    try:
        resolve_sampler(sampler, None)
    except InvalidInput:
        return False
    return True


def _unknown(kind: str, value: Any, names: tuple[str, ...], where: str, human: bool = False) -> str:
    text = value if isinstance(value, str) else repr(value)
    folded = " ".join(text.lower().split())
    close = difflib.get_close_matches(folded, names, n=5, cutoff=0.6)
    if human:
        close += [_HUMAN[h] for h in difflib.get_close_matches(folded, list(_HUMAN), n=3, cutoff=0.6)
                  if h not in close]  # "Euler" when "euler" is already there
    message = f"Unknown {kind} {value!r}."
    if close:
        return message + " Did you mean " + ", ".join(repr(c) for c in close) + "?"
    message += f" ComfyUI's {kind}s{where}: {', '.join(names)}."
    if human:
        message += " Human names also work: " + ", ".join(repr(n) for n in HUMAN_SAMPLERS) + "."
    return message
