"""Classify and review images with a vision LLM behind an Ollama-compatible HTTP API.

Standard library HTTP only (urllib): the backend runs in worker threads. POST /api/chat first; a
server that answers 404 there (older Ollama, some compatible servers) is asked with /api/generate,
and is remembered as such. Every failure raises ClassifierError with a one-line message that never
contains the image data or the request headers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import InvalidInput
from ..core.http import TransportError, direct_opener, exchange, service_url
from .base import (
    ClassifierError,
    Review,
    RosterEntry,
    Suggestion,
    extract_json,
    parse_review,
    parse_suggestion,
    snippet,
)

log = logging.getLogger("lora_studio.classification.base")

MAX_SIDE = 768  # longer side of the image sent to the model
_DESIGN_CHARS = 240  # of each character's design prompt, in the classification prompt


def encode_image(path: Path | str, max_side: int = MAX_SIDE) -> str:
    """The image, downscaled so its longer side is <= max_side, as base64: PNG when it has
    transparency, JPEG otherwise. An unreadable file raises InvalidInput."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size when possible
            im = ImageOps.exif_transpose(im)
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                im.convert("RGBA").save(buf, format="PNG", optimize=False)
            else:
                im.convert("RGB").save(buf, format="JPEG", quality=90)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"Cannot read image {Path(path).name}: {type(exc).__name__}") from None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _one_line(text: Any, limit: int) -> str:
    return snippet(text, limit) if isinstance(text, str) else ""


def classify_prompt(roster: list[RosterEntry]) -> str:
    lines = []
    for item in roster:
        design = _one_line(item.design_prompt, _DESIGN_CHARS)
        lines.append(f'- slug "{item.slug}": {_one_line(item.name, 80) or item.slug}'
                     + (f" — {design}" if design else ""))
    return (
        "You sort frames of anime characters. These are the only characters of this project:\n"
        + "\n".join(lines)
        + "\n\nWhich of them is the main subject of the image? Answer with JSON only:\n"
        '{"primary": "<slug>" or null, "others": ["<slug>", ...], "confidence": <0..1>, '
        '"description": "<one short sentence about the image>"}\n'
        "Use the slugs listed above, nothing else. primary is null when no listed character is clearly "
        "the main subject, and also for group shots (several characters with no single main one), "
        "images that are too dark or too blurry, or a subject that is tiny in the frame. others lists "
        "the other listed characters also visible. confidence is how sure you are about primary."
    )


def review_prompt(character: RosterEntry) -> str:
    name = _one_line(character.name, 80) or character.slug or "the character"
    design = _one_line(character.design_prompt, 600)
    return (
        f"You review images for a training dataset of the anime character {name}"
        + (f", whose design is: {design}" if design else "")
        + ".\nScore this image. Answer with JSON only:\n"
        '{"character_match": <0-10>, "solo": <true|false>, "clarity": <0-10>, "completeness": <0-10>, '
        '"training_value": <0-10>, "caption": "<a short training caption of the image>", '
        '"issues": ["<short issue>", ...]}\n'
        "character_match: how well it matches the character's design (hair, eyes, outfit, colors). "
        "solo: the character alone in the image. clarity: sharp, well lit, no artifacts. completeness: "
        "how much of the character is visible. training_value: how useful it is for teaching the "
        "character. issues: every problem, e.g. blurry, group shot, wrong outfit, wrong art style, "
        "awkward pose, wrong expression; an empty list when there is none."
    )


class OllamaBackend:
    """A vision model served by Ollama (or a compatible server) at `base_url`, e.g.
    http://127.0.0.1:11434. `headers` (e.g. Authorization) go with every request."""

    name = "ollama"

    def __init__(self, base_url: str, model: str, timeout: float = 120, headers: Mapping[str, str] | None = None):
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("The Ollama model name is required, e.g. llava or qwen2.5vl.")
        self.base_url, self.headers = service_url(base_url, "Ollama", "http://127.0.0.1:11434", headers)
        if timeout is None or timeout <= 0:
            raise InvalidInput("The Ollama timeout must be a positive number of seconds.")
        self.model = model.strip()
        self.timeout = float(timeout)
        self._use_generate = False  # set once /api/chat answered 404 and /api/generate worked
        # Usually a local/LAN service: don't send its requests through the environment's proxies.
        self._opener = direct_opener()

    def __repr__(self) -> str:
        return f"OllamaBackend({self.base_url!r}, {self.model!r})"

    # -- API ---------------------------------------------------------------------------------------

    def classify(self, image_path: Path | str, roster: list[RosterEntry]) -> Suggestion:
        """Which roster character the image shows."""
        if not roster:
            return Suggestion(None, 0.0, [], "", self.name)
        answer = self._ask(classify_prompt(roster), image_path)
        suggestion = parse_suggestion(answer, roster, self.name)
        log.debug("classified %s as %s (%.2f)", Path(image_path).name, suggestion.character, suggestion.confidence)
        return suggestion

    def review(self, image_path: Path | str, character: RosterEntry) -> Review:
        """Scores the image as training material for `character`."""
        return parse_review(self._ask(review_prompt(character), image_path))

    # -- transport ---------------------------------------------------------------------------------

    def _ask(self, prompt: str, image_path: Path | str) -> dict:
        """The JSON object the model answered to `prompt` about the image."""
        image = encode_image(image_path)
        if not self._use_generate:
            messages = [{"role": "user", "content": prompt, "images": [image]}]
            status, raw = self._post("/api/chat", {"model": self.model, "messages": messages,
                                                   "stream": False, "format": "json"})
            if status != 404:
                return self._answer("/api/chat", status, raw, ("message", "content"))
            log.info("Ollama at %s has no /api/chat (HTTP 404): trying /api/generate", self.base_url)
        status, raw = self._post("/api/generate", {"model": self.model, "prompt": prompt, "images": [image],
                                                   "stream": False, "format": "json"})
        answer = self._answer("/api/generate", status, raw, ("response",))
        self._use_generate = True
        return answer

    def _answer(self, path: str, status: int, raw: bytes, keys: tuple[str, ...]) -> dict:
        if not 200 <= status < 300:
            raise self._error(self._http_error(path, status, raw))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._error(f"answered POST {path} with something that is not JSON: "
                              f"{snippet(raw.decode('utf-8', 'replace'))!r}") from None
        content: Any = body
        for key in keys:
            content = content.get(key) if isinstance(content, dict) else None
        if not isinstance(content, (str, dict)):
            detail = body.get("error") if isinstance(body, dict) else None
            raise self._error(f"answered POST {path} without {'.'.join(keys)}"
                              + (f": {snippet(str(detail))}" if detail else ""))
        try:
            return extract_json(content)
        except ClassifierError as exc:
            raise self._error(exc.message) from None

    def _http_error(self, path: str, status: int, raw: bytes) -> str:
        if status in (401, 403):
            return f"refused POST {path} (HTTP {status}): check the credentials set for it"
        text = raw.decode("utf-8", "replace")
        try:
            detail = json.loads(text).get("error") or text
        except (ValueError, AttributeError):
            detail = text
        return f"answered HTTP {status} to POST {path}: {snippet(str(detail)) or 'no details'}"

    def _error(self, what: str) -> ClassifierError:
        message = f"Ollama at {self.base_url} (model {self.model}) {what}"
        for value in self.headers.values():  # a server may echo a header back: never show it
            if isinstance(value, str) and len(value) >= 4:
                message = message.replace(value, "***")
        return ClassifierError(message)

    def _post(self, path: str, payload: dict) -> tuple[int, bytes]:
        """(status, body) for any HTTP answer; ClassifierError when the server can't be reached."""
        headers = {"Accept": "application/json", "Content-Type": "application/json", **self.headers}
        request = urllib.request.Request(self.base_url + path, data=json.dumps(payload).encode("utf-8"),
                                         headers=headers, method="POST")
        try:
            return exchange(self._opener, request, self.timeout)
        except TransportError as exc:
            if exc.protocol:
                raise self._error(f"did not answer POST {path} in HTTP: {exc.why}") from None
            log.warning("Ollama POST %s at %s failed: %s", path, self.base_url, exc.why)
            raise self._error(f"is not reachable: {exc.why}") from None
