"""Sampler and scheduler names: ComfyUI's lists (fetched, cached briefly, the standard ones while it
does not answer) and the check of a style's choice with close matches."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from lora_studio.core.errors import InvalidInput, Unavailable
from lora_studio.core.samplers import KNOWN_SAMPLERS, KNOWN_SCHEDULERS, SamplerNames, combo_choices
from lora_studio.generation.client import ComfyUIClient
from support.comfy_schema import load_object_info

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")


def test_the_known_lists_are_those_of_the_recorded_comfyui() -> None:
    assert list(KNOWN_SAMPLERS) == combo_choices(OBJECT_INFO, "KSampler", "sampler_name")
    assert list(KNOWN_SCHEDULERS) == combo_choices(OBJECT_INFO, "KSampler", "scheduler")


def test_combo_choices_reads_both_spellings_of_a_combo() -> None:
    info = {"KSampler": {"input": {"required": {"sampler_name": ["COMBO", {"options": ["euler", "mine"]}],
                                                 "steps": ["INT", {"default": 20}]},
                                    "optional": {"scheduler": [["normal", "karras"], {}]}}}}
    assert combo_choices(info, "KSampler", "sampler_name") == ["euler", "mine"]
    assert combo_choices(info, "KSampler", "scheduler") == ["normal", "karras"]
    assert combo_choices(info, "KSampler", "steps") is None
    assert combo_choices(info, "Nope", "scheduler") is None
    assert combo_choices({"KSampler": "odd"}, "KSampler", "scheduler") is None


class FakeClient:
    """ComfyUIClient.object_info's contract: {node_class: definition}, or Unavailable."""

    def __init__(self, samplers: list[str] | None, schedulers: list[str] | None = None):
        self.samplers, self.schedulers = samplers, schedulers or ["normal", "karras", "my_schedule"]
        self.calls: list[tuple[str | None, float | None]] = []

    def object_info(self, node_class: str | None = None, *, timeout: float | None = None) -> dict:
        self.calls.append((node_class, timeout))
        if self.samplers is None:
            raise Unavailable("ComfyUI at http://x is not reachable: connection refused")
        return {"KSampler": {"input": {"required": {"sampler_name": [self.samplers, {}],
                                                     "scheduler": [self.schedulers, {}]}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_comfyuis_own_lists_are_used_and_cached_for_the_ttl() -> None:
    fake, clock = FakeClient(["euler", "dpmpp_2m", "my_sampler"]), Clock()
    names = SamplerNames(lambda: fake, ttl=60, retry=10, timeout=1.5, clock=clock)
    assert names.check("my_sampler", "my_schedule") == ("my_sampler", "my_schedule")  # a custom node's
    assert names.check("DPM++ 2M", None) == ("dpmpp_2m", "normal")
    with pytest.raises(InvalidInput, match="Unknown sampler 'ddim'"):  # standard, but this ComfyUI lacks it
        names.check("ddim", "normal")
    assert fake.calls == [("KSampler", 1.5)]  # one short request for all of these
    assert names.lists()["source"] == "comfyui"
    clock.now += 61
    fake.samplers.append("ddim")
    assert names.check("ddim", "karras") == ("ddim", "karras")
    assert len(fake.calls) == 2


def test_the_standard_lists_while_comfyui_does_not_answer_then_asked_again() -> None:
    fake, clock = FakeClient(None), Clock()
    names = SamplerNames(lambda: fake, ttl=60, retry=10, clock=clock)
    assert names.check("uni_pc_bh2", "kl_optimal") == ("uni_pc_bh2", "kl_optimal")
    with pytest.raises(InvalidInput, match="standard list"):
        names.check("my_sampler", "normal")
    assert len(fake.calls) == 1 and names.lists()["source"] == "known"
    clock.now += 11
    fake.samplers = ["my_sampler"]
    assert names.check("my_sampler", "normal") == ("my_sampler", "normal")
    assert len(fake.calls) == 2 and names.lists()["source"] == "comfyui"
    # an answer without the lists is no better than none
    empty = SamplerNames(lambda: FakeClient([]), clock=clock)
    assert empty.lists()["source"] == "known"


@pytest.mark.parametrize(("sampler", "scheduler", "expected"), [
    ("DPM++ 2M Karras", "normal", ("dpmpp_2m", "karras")),
    ("  euler a ", None, ("euler_ancestral", "normal")),
    ("DDIM", None, ("ddim", "ddim_uniform")),
    ("dpmpp_2m_sde", "exponential", ("dpmpp_2m_sde", "exponential")),
    ("lcm", "", ("lcm", "normal")),
])
def test_known_names_and_human_names_pass(sampler, scheduler, expected) -> None:
    assert SamplerNames().check(sampler, scheduler) == expected


@pytest.mark.parametrize(("sampler", "scheduler", "message"), [
    ("not_a_sampler", "normal", r"Unknown sampler 'not_a_sampler'\. ComfyUI's samplers \(its standard list.*euler, "),
    ("eulr", "normal", r"Unknown sampler 'eulr'\. Did you mean 'euler', 'Euler a'\?"),
    ("dpmpp2m", "karras", r"Did you mean 'dpmpp_2m'"),
    ("DPM++ 2M Karas", None, r"Did you mean 'DPM\+\+ 2M Karras'"),
    ("no such sampler", None, r"Human names also work: 'DPM\+\+ 2M Karras'"),
    ("euler", "karas", r"Unknown scheduler 'karas'\. Did you mean 'karras'\?"),
    ("euler", "not_a_scheduler", r"ComfyUI's schedulers .*: simple, sgm_uniform, karras"),
    ("euler", "two words", r"Unknown scheduler 'two words'"),
    ("", None, r"A sampler is required"),
])
def test_unknown_names_are_refused_with_close_matches(sampler, scheduler, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        SamplerNames().check(sampler, scheduler)


def test_a_comfyui_that_never_answers_costs_only_the_short_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        names = SamplerNames(lambda: ComfyUIClient(url, timeout=30), timeout=0.3)
        start = time.monotonic()
        assert names.check("euler", "normal") == ("euler", "normal")
        assert time.monotonic() - start < 5
        assert names.lists()["source"] == "known"
