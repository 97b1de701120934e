"""Schemathesis fuzzes the whole API from its own OpenAPI document (GET /lora-studio/v1/openapi.json)
against a standalone server (SQLite and PostgreSQL), after seeding a project, a character and a few
images so the requests reach deep code: no answer is a 5xx, and every answer keeps to the document
(documented status, content type and shape). Bounded: a fixed number of examples per operation and
mode, a derandomized (fixed-seed) generator, and a wall-clock budget. ComfyUI and Ollama are the
tests' own stand-ins (tests/support/fake_comfyui.py, fake_ollama.py), served from this process on
their own event loop, so the routes that talk to them answer for real (no 502/503 for "upstream
down"); no base model exists, so nothing long (training) can start."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from support.comfy_schema import load_object_info
from support.fake_comfyui import create_fake_comfyui
from support.fake_comfyui import state_of as comfyui_state
from support.fake_ollama import create_fake_ollama
from support.fake_ollama import state_of as ollama_state
from support.images import image_bytes
from support.processes import app_in_thread, clean_env, studio_process
from support.studio_http import upload

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

V1 = "/lora-studio/v1"
OBJECT_INFO = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json"
# what the stand-in Ollama answers: a review for the auto-review prompt, an empty suggestion otherwise
REVIEW = {"character_match": 10, "solo": True, "clarity": 10, "completeness": 10, "training_value": 10,
          "caption": "aikotnk, 1girl", "issues": []}
SUGGESTION = {"primary": None, "others": [], "confidence": 0.0, "description": "a drawn test image"}


def ollama_answer(call) -> dict:
    return REVIEW if "character_match" in call.prompt else SUGGESTION


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# per operation and pass (valid, invalid, valid on the seeded records); a longer run, e.g. before a
# release: LORA_STUDIO_FUZZ_EXAMPLES=60 LORA_STUDIO_FUZZ_BUDGET_S=900 pytest tests/integration/test_fuzz_api.py -s
EXAMPLES = int(os.environ.get("LORA_STUDIO_FUZZ_EXAMPLES", "10"))
BUDGET_S = float(os.environ.get("LORA_STUDIO_FUZZ_BUDGET_S", "40"))  # per database: generation stops when spent
REQUEST_TIMEOUT_S = 15.0
PROFILE = os.environ.get("LORA_STUDIO_FUZZ_PROFILE") == "1"  # per-operation counts and times


class Server:
    def __init__(self, base: str):
        self.base_url, self.api = base, base + V1


def call(server: Server, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.api + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def seed(server: Server) -> dict:
    """A project whose style has a checkpoint, a character with approved, rejected and pending images, a pool
    image, a job, a generation queued on the stand-in ComfyUI."""
    p = call(server, "POST", "/projects", {"name": "Fuzz Academy"})
    # a checkpoint the stand-in ComfyUI lists, so generations reach it (and its /history) for real
    call(server, "PATCH", f"/projects/{p['id']}/style", {"checkpoint": "random_sd15.safetensors"})
    c = call(server, "POST", f"/projects/{p['id']}/characters", {"name": "Aiko", "design_prompt": "1girl",
                                                                   "trigger_word": "aikotnk"})
    created = upload(server, c["id"], {f"{i}.png": image_bytes(seed=900 + i) for i in range(4)})["created"]
    pool = upload(server, None, {"pool.png": image_bytes(seed=950)}, project_id=p["id"])["created"]
    ids = [i["id"] for i in created]
    call(server, "POST", f"/images/{ids[0]}/approve")
    call(server, "POST", f"/images/{ids[1]}/approve")
    call(server, "POST", f"/images/{ids[2]}/reject", {"categories": ["bad_quality"], "regenerate": False})
    job = call(server, "GET", "/jobs?limit=1")["items"][0]
    generation = call(server, "POST", f"/characters/{c['id']}/generate", {"seed": 42})
    return {"project_id": p["id"], "character_id": c["id"], "image_id": ids[3], "job_id": job["id"],
            "generation_id": generation["id"], "name": "sample.png", "pool_image": pool[0]["id"]}


def run_cases(op, strategy, negative: bool, server: Server, session, deadline: float, statuses: Counter,
              failures: list[str]) -> None:
    """Up to EXAMPLES cases of `strategy`, each sent and checked; failures collected, not raised (no
    shrinking: the whole run stays bounded and reports every finding)."""

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=server.base_url, session=session, timeout=REQUEST_TIMEOUT_S)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as e:
            failures.append(f"{op.method.upper()} {op.path} -> {response.status_code}: "
                            f"{'; '.join(f.title for f in e.exceptions)}\n    {case.as_curl_command()}\n"
                            f"    {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:  # nothing in the operation can be made invalid (no parameters, no body)
        if not negative:
            raise


def fuzz(server: Server, known: dict) -> tuple[Counter, list[str], set[str]]:
    """Pass by pass (valid cases of every operation, then invalid ones, then valid ones on the seeded
    records), so every operation is reached even when the budget runs short; valid deletions come
    last so they do not take the seeded records away from the other operations first."""
    import requests

    schema = schemathesis.openapi.from_url(server.api + "/openapi.json")
    session = requests.Session()
    statuses: Counter = Counter()
    failures: list[str] = []
    reached: set[str] = set()
    deadline = time.monotonic() + BUDGET_S
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: (op.path, op.method))
    keep = [op for op in operations if op.method.upper() != "DELETE"]
    deletes = [op for op in operations if op.method.upper() == "DELETE"]
    passes = [(keep, GenerationMode.POSITIVE, False), (operations, GenerationMode.NEGATIVE, False),  # (invalid ids)
              (keep, GenerationMode.POSITIVE, True), (deletes, GenerationMode.POSITIVE, False)]
    for ops, mode, pin in passes:
        for op in ops:
            pinned = {p.name: known[p.name] for p in op.path_parameters if p.name in known}
            if pin and not pinned:
                continue
            if time.monotonic() > deadline:
                print(f"fuzz: the {BUDGET_S:.0f}s budget ran out at {op.label} ({mode.value})")
                return statuses, failures, reached
            strategy = op.as_strategy(mode, path_parameters=pinned if pin else None)
            t0, n0 = time.monotonic(), sum(statuses.values())
            run_cases(op, strategy, mode == GenerationMode.NEGATIVE, server, session, deadline, statuses, failures)
            if sum(statuses.values()) > n0:
                reached.add(op.label)
            if PROFILE:
                print(f"{op.label} {mode.value}{' pinned' if pin else ''}: {sum(statuses.values()) - n0} cases "
                      f"{time.monotonic() - t0:.1f}s")
    return statuses, failures, reached


def fuzz_studio(tmp_path: Path, data: Path, args: list[str], env: dict[str, str]):
    """The studio in a subprocess, seeded, then fuzzed; its log stays in tmp_path/server.log."""
    with studio_process(tmp_path, data, *args, env=env) as base:
        server = Server(base)
        known = seed(server)
        started = time.monotonic()
        statuses, failures, reached = fuzz(server, known)
        operations = {f"{method.upper()} {path}" for path, item in
                      json.loads(urllib.request.urlopen(server.api + "/openapi.json").read())["paths"].items()
                      for method in item}
        took = time.monotonic() - started
    return statuses, failures, reached, operations, took


def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path, database_url):
    data, out, models = tmp_path / "data", tmp_path / "comfy_output", tmp_path / "models"
    out.mkdir()
    models.mkdir()
    (out / "ComfyUI_00001_.png").write_bytes(image_bytes(seed=1))
    comfyui, ollama = create_fake_comfyui(load_object_info(OBJECT_INFO), out), create_fake_ollama(ollama_answer)
    with app_in_thread(comfyui, "fake-comfyui") as comfyui_url, app_in_thread(ollama, "fake-ollama") as ollama_url:
        args = ["--comfyui-url", comfyui_url, "--comfyui-output", str(out),
                "--models-dir", str(models), "--loras-dir", str(tmp_path / "loras")]
        if database_url:
            args += ["--database-url", database_url]
        env = clean_env(LORA_STUDIO_MIN_APPROVED_IMAGES="2", LORA_STUDIO_CLASSIFIER="ollama",
                        LORA_STUDIO_OLLAMA_URL=ollama_url)
        statuses, failures, reached, operations, took = fuzz_studio(tmp_path, data, args, env)
    log = (tmp_path / "server.log").read_text(errors="replace")
    kind = "postgresql" if database_url else "sqlite"
    cases = sum(statuses.values())
    server_errors = {code: n for code, n in statuses.items() if code >= 500}
    print(f"\nfuzz[{kind}]: {cases} cases in {took:.0f}s, statuses {dict(sorted(statuses.items()))}, "
          f"5xx: {server_errors or 0}, schema failures: {len(failures)}, operations: {len(reached)}, "
          f"stand-ins: ComfyUI {len(comfyui_state(comfyui).requests)} requests "
          f"({len(comfyui_state(comfyui).accepted)} prompts queued), Ollama {len(ollama_state(ollama).calls)} calls")
    # the routes that need ComfyUI and Ollama were answered by them, not by "upstream unreachable"
    assert comfyui_state(comfyui).requests and ollama_state(ollama).calls, "the stand-ins were never called"
    # the document itself is what the fuzz loads (Schemathesis leaves it out of the operations it calls)
    assert operations - reached == {f"GET {V1}/openapi.json"}, "operations the fuzz never reached"
    assert cases >= 500, f"the fuzz ran only {cases} cases"
    assert not server_errors and "Traceback" not in log, "\n".join(failures[:30]) + "\n" + log[-3000:]
    assert not failures, "\n".join(failures[:30])
