"""Classification backends: OllamaBackend (synchronous, urllib) against the fake Ollama on a real port,
and EmbeddingBackend with a tiny random CLIP vision model."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lora_studio.classification.base import ClassifierError, Review, RosterEntry, Suggestion, decide
from lora_studio.classification.embedding import EmbeddingBackend
from lora_studio.classification.ollama import OllamaBackend
from lora_studio.core.errors import UpstreamError
from PIL import Image, ImageDraw
from support.fake_ollama import FakeOllama, OllamaCall, create_fake_ollama, error_response, state_of
from support.images import draw
from support.tiny_clip import build_tiny_clip_vision

ROSTER = [
    RosterEntry(slug="zephyra", name="Zephyra", design_prompt="silver braid, emerald storm cloak"),
    RosterEntry(slug="kael", name="Kael", design_prompt="crimson scarf, obsidian gauntlets"),
]
SECRET = "Bearer s3cret-token-xyz"


async def start(aiohttp_server, answer, **options) -> tuple[TestServer, FakeOllama, OllamaBackend]:
    server = await aiohttp_server(create_fake_ollama(answer, **options))
    backend = OllamaBackend(f"http://127.0.0.1:{server.port}", "llava", timeout=5, headers={"Authorization": SECRET})
    return server, state_of(server.app), backend


@pytest.fixture
def frame(tmp_path: Path) -> Path:
    path = tmp_path / "frame.png"
    draw((1000, 600), seed=3).save(path)
    return path


def decoded(call: OllamaCall) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(call.images[0], validate=True)))


# -- OllamaBackend ---------------------------------------------------------------------------------


async def test_classify_sends_the_given_roster_and_the_image(aiohttp_server, frame: Path) -> None:
    answer = {"primary": "Zephyra", "others": ["kael", "Aria"], "confidence": 8, "description": "Zephyra waves"}
    _, state, backend = await start(aiohttp_server, lambda call: answer)

    suggestion = await asyncio.to_thread(backend.classify, frame, ROSTER)

    assert suggestion == Suggestion("zephyra", 0.8, ["kael"], "Zephyra waves", "ollama")
    [call] = state.calls
    assert (call.path, call.model, call.format, call.stream, call.image_count) == ("/api/chat", "llava", "json",
                                                                                  False, 1)
    assert call.body["messages"][0]["role"] == "user"
    for text in ("Zephyra", "zephyra", "Kael", "emerald storm cloak", "crimson scarf", '"primary"', "null"):
        assert text in call.prompt
    assert call.headers["Authorization"] == SECRET
    image = decoded(call)
    assert max(image.size) == 768 and image.size == (768, 461)


async def test_the_roster_comes_from_the_caller(aiohttp_server, frame: Path) -> None:
    _, state, backend = await start(aiohttp_server, lambda call: {"primary": "orin", "confidence": 0.9})
    roster = [RosterEntry(slug="orin", name="Orin Vale", design_prompt="teal visor")]
    assert (await asyncio.to_thread(backend.classify, frame, roster)).character == "orin"
    assert "Orin Vale" in state.calls[0].prompt and "teal visor" in state.calls[0].prompt
    assert "Zephyra" not in state.calls[0].prompt
    # the same answer naming a character outside this roster is unassigned
    other = await asyncio.to_thread(backend.classify, frame, ROSTER)
    assert (other.character, other.confidence) == (None, 0.0)
    # an empty roster: nothing to ask
    assert await asyncio.to_thread(backend.classify, frame, []) == Suggestion(None, 0.0, [], "", "ollama")
    assert len(state.calls) == 2


@pytest.mark.parametrize("text", [
    'Sure!\n```json\n{"primary": "kael", "others": [], "confidence": 0.65, "description": "Kael"}\n```\nDone.',
    'I think this is {"primary": "KAEL", "confidence": "65%", "description": "Kael"} based on the scarf.',
])
async def test_classify_parses_wrapped_answers(aiohttp_server, frame: Path, text: str) -> None:
    _, _, backend = await start(aiohttp_server, lambda call: text)
    suggestion = await asyncio.to_thread(backend.classify, frame, ROSTER)
    assert (suggestion.character, suggestion.confidence) == ("kael", 0.65)
    assert decide(suggestion, 0.6) == "kael" and decide(suggestion, 0.7) is None


async def test_review(aiohttp_server, frame: Path) -> None:
    answer = {"character_match": 7, "solo": False, "clarity": 9, "completeness": 6, "training_value": 4,
              "caption": "zephyra, silver braid, cloak", "issues": ["blurry edges", "multiple people", "bad pose"]}
    _, state, backend = await start(aiohttp_server, lambda call: answer)

    review = await asyncio.to_thread(backend.review, frame, ROSTER[0])

    assert review == Review(0.7, False, 0.9, 0.4, "zephyra, silver braid, cloak",
                            ["blurry edges", "multiple people", "bad pose"], ["bad_quality", "not_solo", "wrong_pose"])
    [call] = state.calls
    assert "Zephyra" in call.prompt and "emerald storm cloak" in call.prompt and "character_match" in call.prompt
    assert call.format == "json" and call.image_count == 1 and decoded(call).size == (768, 461)


async def test_falls_back_to_generate_when_chat_is_404(aiohttp_server, frame: Path) -> None:
    answer = {"primary": "kael", "confidence": 0.9}
    _, state, backend = await start(aiohttp_server, lambda call: answer, chat=False)

    first = await asyncio.to_thread(backend.classify, frame, ROSTER)
    review = await asyncio.to_thread(backend.review, frame, ROSTER[1])

    assert (first.character, first.confidence) == ("kael", 0.9)
    assert isinstance(review, Review)
    assert state.not_found == ["/api/chat"]  # remembered: the second request went straight to generate
    assert state.paths() == ["/api/generate", "/api/generate"]
    call = state.calls[0]
    assert call.format == "json" and call.stream is False and call.image_count == 1
    assert "Kael" in call.prompt and "messages" not in call.body and decoded(call).size == (768, 461)


async def _slow(call: OllamaCall) -> str:
    await asyncio.sleep(1.0)
    return "{}"


def _echo_headers(call: OllamaCall) -> web.Response:
    return error_response(500, f"boom, you sent {call.headers.get('Authorization')}")


@pytest.mark.parametrize(("answer", "options", "expected"), [
    (_echo_headers, {}, "answered HTTP 500 to POST /api/chat: boom, you sent ***"),
    (lambda call: web.Response(status=401, text="no"), {}, "refused POST /api/chat (HTTP 401)"),
    (lambda call: "It is probably Zephyra.", {}, "no JSON object: 'It is probably Zephyra.'"),
    (lambda call: "", {}, "answer is empty"),
    (lambda call: web.Response(text="<html>proxy</html>"), {}, "not JSON: '<html>proxy</html>'"),
    (lambda call: web.json_response({"done": True}), {}, "without message.content"),
    (lambda call: "{}", {"models": ["qwen2.5vl"]}, "HTTP 404 to POST /api/generate: model 'llava' not found"),
    (_slow, {}, "no answer within 0.3 s"),
])
async def test_errors_are_one_clean_line(aiohttp_server, frame: Path, answer, options, expected: str) -> None:
    server, _, backend = await start(aiohttp_server, answer, **options)
    backend.timeout = 0.3

    with pytest.raises(ClassifierError) as info:
        await asyncio.to_thread(backend.classify, frame, ROSTER)

    message = info.value.message
    assert isinstance(info.value, UpstreamError) and info.value.status == 502
    assert message.startswith(f"Ollama at http://127.0.0.1:{server.port} (model llava) ")
    assert expected in message
    assert "\n" not in message and len(message) < 400
    assert "s3cret" not in message and "/9j/" not in message and "iVBOR" not in message


async def test_unreachable_server(frame: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OllamaBackend(f"http://127.0.0.1:{port}", "llava", headers={"Authorization": SECRET})
    with pytest.raises(ClassifierError, match=r"^Ollama at http://127\.0\.0\.1:\d+ \(model llava\) is not "
                                              r"reachable: connection refused$"):
        await asyncio.to_thread(backend.review, frame, ROSTER[0])


# -- EmbeddingBackend ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip_vision(tmp_path_factory.mktemp("tiny_clip"))


def red_shapes(shift: int) -> Image.Image:
    """Family A: red-dominant ellipses and boxes (each shift moves them a little)."""
    im = Image.new("RGB", (64, 64), (150, 10, 20))
    pen = ImageDraw.Draw(im)
    pen.ellipse((8 + shift, 8, 36 + shift, 36), fill=(255, 60, 40))
    pen.rectangle((30, 34 + shift, 58, 58), fill=(200, 0, 90))
    return im


def blue_stripes(shift: int) -> Image.Image:
    """Family B: blue and white horizontal stripes."""
    im = Image.new("RGB", (64, 64), (10, 20, 160))
    pen = ImageDraw.Draw(im)
    for y in range(shift, 64, 12):
        pen.rectangle((0, y, 63, y + 4), fill=(230, 240, 255))
    return im


@pytest.fixture
def families(tmp_path: Path) -> dict[str, list[Path]]:
    refs: dict[str, list[Path]] = {"a": [], "b": []}
    for shift in range(3):
        for slug, make in (("a", red_shapes), ("b", blue_stripes)):
            path = tmp_path / f"{slug}{shift}.png"
            make(shift * 2).save(path)
            refs[slug].append(path)
    return refs


@pytest.fixture
def forward_calls(monkeypatch) -> list[int]:
    """The batch size of every forward pass of any CLIPVisionModelWithProjection."""
    from transformers import CLIPVisionModelWithProjection

    sizes: list[int] = []
    original = CLIPVisionModelWithProjection.forward

    def counting(self, *args, **kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        sizes.append(int(pixels.shape[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CLIPVisionModelWithProjection, "forward", counting)
    return sizes


async def test_embeddings_are_normalised(clip_dir: Path, families: dict[str, list[Path]]) -> None:
    backend = EmbeddingBackend(clip_dir, batch_size=4)
    vectors = await asyncio.to_thread(backend.embed, families["a"] + families["b"])
    assert vectors.shape == (6, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[3])


async def test_classifies_by_nearest_references(clip_dir: Path, families: dict[str, list[Path]],
                                                tmp_path: Path) -> None:
    backend = EmbeddingBackend(clip_dir)
    query_a, query_b = tmp_path / "query_a.png", tmp_path / "query_b.png"
    shutil.copy(families["a"][1], query_a)
    shutil.copy(families["b"][2], query_b)

    scores = await asyncio.to_thread(backend.scores, query_a, families)
    a = await asyncio.to_thread(backend.classify, query_a, families)
    b = await asyncio.to_thread(backend.classify, query_b, families)

    # scores are the mean of the top-3 cosine similarities, computed independently here
    vectors = backend.embed([query_a, *families["a"], *families["b"]])
    expected = {slug: float(np.sort(vectors[1 + 3 * i:4 + 3 * i] @ vectors[0])[::-1][:3].mean())
                for i, slug in enumerate(("a", "b"))}
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scores["a"] > scores["b"]
    assert (a.character, a.others, a.backend) == ("a", ["b"], "embedding")
    assert (b.character, b.others) == ("b", ["a"])
    assert 0.5 < a.confidence <= 1.0 and 0.5 < b.confidence <= 1.0
    assert isinstance(a.confidence, float)


async def test_ambiguous_references_are_not_confident(clip_dir: Path, families: dict[str, list[Path]]) -> None:
    backend = EmbeddingBackend(clip_dir)
    same = {"a": families["a"], "twin": list(families["a"])}  # two characters with the same references
    suggestion = await asyncio.to_thread(backend.classify, families["a"][0], same)
    assert suggestion.confidence == pytest.approx(0.5, abs=1e-3)
    assert decide(suggestion, 0.6) is None


async def test_reference_embeddings_are_cached(clip_dir: Path, families: dict[str, list[Path]],
                                               forward_calls: list[int]) -> None:
    backend = EmbeddingBackend(clip_dir)
    query = families["a"][0]

    first = await asyncio.to_thread(backend.classify, query, families)
    assert sum(forward_calls) == 7  # 6 references + the query
    forward_calls.clear()

    second = await asyncio.to_thread(backend.classify, query, families)
    assert forward_calls == [1]  # only the query
    assert second == first
    forward_calls.clear()

    red_shapes(5).save(families["a"][2])  # a changed file (new size/mtime) is embedded again
    await asyncio.to_thread(backend.classify, query, families)
    assert sum(forward_calls) == 2


async def test_characters_without_references(clip_dir: Path, families: dict[str, list[Path]], tmp_path: Path,
                                             forward_calls: list[int]) -> None:
    backend = EmbeddingBackend(clip_dir)
    query = families["a"][0]

    nothing = await asyncio.to_thread(backend.classify, query, {"a": [], "b": []})
    assert (nothing.character, nothing.confidence, nothing.others) == (None, 0.0, [])
    assert (await asyncio.to_thread(backend.classify, query, {})).character is None
    assert forward_calls == []  # nothing to compare with: no work at all

    only_b = await asyncio.to_thread(backend.classify, query, {"a": [tmp_path / "gone.png"], "b": families["b"]})
    assert (only_b.character, only_b.others) == ("b", [])
    assert 0.0 <= only_b.confidence <= 1.0


async def test_missing_model_folder(tmp_path: Path, families: dict[str, list[Path]]) -> None:
    backend = EmbeddingBackend(tmp_path / "no-such-model")
    with pytest.raises(ClassifierError, match="No CLIP vision model folder"):
        await asyncio.to_thread(backend.classify, families["a"][0], families)
