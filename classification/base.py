"""Auto-assign ingested images to one of a project's characters, and auto-review them.

A pure library: the roster (the project's characters) and the reference images always come from the
caller. Three backends share one answer shape, `Suggestion` (`factory.make_backend` picks one):

- `OllamaBackend` (classification/ollama.py): a vision LLM behind an Ollama-compatible HTTP API;
  it also reviews images (`Review`).
- `EmbeddingBackend` (classification/embedding.py): local CLIP vision weights; nearest neighbours
  between the image and each character's approved images.
- `NoBackend` (here): classification switched off; everything stays unassigned.

`decide(suggestion, threshold)` turns a suggestion into the slug to assign, or None (unassigned).
The backends are synchronous (urllib, torch): call them from worker threads.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UpstreamError

log = logging.getLogger("lora_studio.classification.base")

__all__ = [
    "ClassifierError", "NoBackend", "Review", "RosterEntry", "Suggestion",
    "categories_from_issues", "decide", "extract_json", "normalise_score", "parse_review", "parse_suggestion",
    "resolve_slug", "review_verdict",
]


class ClassifierError(UpstreamError):
    """A classification backend failed (unreachable, HTTP error, unusable answer, model not loadable).
    The message is one line, safe to show: never image data, never request headers."""

    code = "classifier_error"


@dataclass(frozen=True)
class RosterEntry:
    """A character the classifier may choose (the caller makes them from the project's characters)."""

    slug: str
    name: str
    design_prompt: str = ""


@dataclass
class Suggestion:
    """`character`: a roster slug, or None (unassigned). `confidence` (0..1) is the confidence that
    `character` is right (0.0 when it is None). `others`: other roster slugs seen in the image (Ollama)
    or the next best characters, best first (embeddings)."""

    character: str | None
    confidence: float
    others: list[str] = field(default_factory=list)
    description: str = ""
    backend: str = "none"


@dataclass
class Review:
    """An automatic review of one image for one character; every score is in 0..1."""

    match: float
    solo: bool
    clarity: float
    training_value: float
    caption: str
    issues: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # core.categories.CATEGORIES names


class NoBackend:
    """Classification switched off: every image stays unassigned."""

    name = "none"

    def classify(self, image_path: Path | str, roster: Any = None) -> Suggestion:
        return Suggestion(None, 0.0, [], "", self.name)


def decide(suggestion: Suggestion, threshold: float) -> str | None:
    """The slug to assign when the suggestion is confident enough (confidence >= threshold), else None."""
    if suggestion.character is None:
        return None
    return suggestion.character if suggestion.confidence >= threshold else None


# -- answer normalisation (shared by the backends) -------------------------------------------------

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?\s*$")


def normalise_score(value: Any, scale: float = 1.0, default: float = 0.0) -> float:
    """A model's score as 0..1. `scale` is the scale the prompt asked for (1 or 10); values above it
    are read on the next larger scale (0-10, then 0-100) and clamped. Accepts numbers and strings such
    as "0.8", "8", "80%" and "8/10"; anything else (bool, None, NaN, text) gives `default`."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            return default
        number = float(m.group(1))
        if m.group(2) == "%":
            return _clamp(number / 100)
        if m.group(3):
            denominator = float(m.group(3))
            return _clamp(number / denominator) if denominator > 0 else default
        value = number
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    value = float(value)
    for candidate in (scale, 10.0, 100.0):
        if value <= candidate:
            return _clamp(value / candidate)
    return 1.0


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


_NOBODY = {"", "null", "none", "nobody", "unknown", "unassigned", "n/a", "na", "no one", "noone", "-"}


def _fold(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.casefold())


def resolve_slug(value: Any, roster: list[RosterEntry]) -> str | None:
    """The roster slug a model meant by `value`: a slug or a character name, case-insensitive, ignoring
    spaces and punctuation ("Zephyra Storm" -> "zephyra-storm"). Unknown or empty -> None."""
    if isinstance(value, dict):  # {"slug": ...} or {"name": ...}
        value = value.get("slug") or value.get("name")
    if not isinstance(value, str) or value.strip().casefold() in _NOBODY:
        return None
    wanted = value.strip().casefold()
    for key in ("slug", "name"):
        for item in roster:
            if getattr(item, key).strip().casefold() == wanted:
                return item.slug
    folded = _fold(value)
    if not folded:
        return None
    for key in ("slug", "name"):
        for item in roster:
            if _fold(getattr(item, key)) == folded:
                return item.slug
    return None


# Keyword patterns (prefixes at a word start) for each rejection category, in core.categories order.
_CATEGORY_PATTERNS: dict[str, re.Pattern] = {
    name: re.compile(r"\b(?:" + "|".join(words) + r")", re.IGNORECASE)
    for name, words in {
        "wrong_appearance": [r"outfit", r"hair", r"colou?r", r"design", r"cloth", r"costume", r"appearance",
                             r"eye colou?r", r"wrong character", r"accessor", r"off-model", r"off model"],
        "wrong_style": [r"style", r"art ?style", r"3d\b", r"photo ?realis", r"realistic", r"sketch", r"chibi"],
        "bad_quality": [r"blur", r"low[- ]?qual", r"low[- ]?res", r"artifact", r"artefact", r"jpe?g",
                        r"noise", r"noisy", r"grain", r"pixelat", r"compress", r"out of focus", r"motion blur",
                        r"too dark", r"underexposed", r"overexposed", r"distort", r"watermark", r"smudge"],
        "not_solo": [r"multiple", r"group", r"crowd", r"several", r"two (?:people|characters|persons)",
                     r"other (?:people|characters|person)", r"another (?:character|person)", r"not solo"],
        "wrong_pose": [r"pose", r"posture"],
        "wrong_expression": [r"expression", r"face", r"facial", r"emotion"],
    }.items()
}


def categories_from_issues(issues: list[str], solo: bool = True) -> list[str]:
    """The rejection categories (core.categories names) a review's issues point to, in the canonical
    order; a review that says the image is not solo always gives not_solo."""
    text = "\n".join(i for i in issues if isinstance(i, str))
    found = {name for name, pattern in _CATEGORY_PATTERNS.items() if pattern.search(text)}
    if not solo:
        found.add("not_solo")
    return [name for name in _CATEGORY_PATTERNS if name in found]


def review_verdict(review: Review, reject_below: float) -> tuple[list[str], str] | None:
    """(categories, reason) when a review rejects the image (a score below `reject_below`, or not
    solo), else None. The categories are those its issues name plus what its low scores say: a low
    character match is wrong_appearance, low clarity bad_quality, not solo not_solo; a low training
    value with nothing more specific is bad_quality."""
    scores = {"character match": review.match, "clarity": review.clarity, "training value": review.training_value}
    low = [f"{name} {value:.2f}" for name, value in scores.items() if value < reject_below]
    if not low and review.solo:
        return None
    found = set(review.categories)
    if review.match < reject_below:
        found.add("wrong_appearance")
    if review.clarity < reject_below:
        found.add("bad_quality")
    if not review.solo:
        found.add("not_solo")
    if not found:
        found.add("bad_quality")
    reason = "; ".join(review.issues) or ", ".join(low + ([] if review.solo else ["not solo"]))
    return [name for name in _CATEGORY_PATTERNS if name in found], reason


_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_ANSWER = 200_000


def snippet(text: str, limit: int = 160) -> str:
    """One line of at most `limit` characters, for error messages."""
    line = " ".join(str(text).split())
    return line[:limit] + ("…" if len(line) > limit else "")


def extract_json(text: Any) -> dict:
    """The JSON object in a model's answer: bare, in ``` fences, or with text around it."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ClassifierError("the model's answer is empty")
    text = text[:_MAX_ANSWER]
    for candidate in [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for attempt, m in enumerate(re.finditer(r"\{", text)):
        if attempt >= 200:
            break
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ClassifierError(f"the model's answer has no JSON object: {snippet(text)!r}")


def _first(answer: dict, *keys: str) -> Any:
    return next((answer[k] for k in keys if k in answer), None)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any, limit: int) -> str:
    return snippet(value, limit) if isinstance(value, str) else ""


def parse_suggestion(answer: dict, roster: list[RosterEntry], backend: str = "ollama") -> Suggestion:
    """A classification answer {"primary", "others", "confidence", "description"} as a Suggestion.
    Slugs or names outside the roster become None (unassigned) or are dropped from `others`."""
    character = resolve_slug(_first(answer, "primary", "character", "slug"), roster)
    others: list[str] = []
    for item in _as_list(_first(answer, "others", "other_characters")):
        slug = resolve_slug(item, roster)
        if slug is not None and slug != character and slug not in others:
            others.append(slug)
    confidence = normalise_score(answer.get("confidence")) if character is not None else 0.0
    return Suggestion(character, confidence, others, _text(answer.get("description"), 500), backend)


_SCORE_KEYS = ("character_match", "match", "clarity", "completeness", "training_value")


def _unit_scale(values: list[Any]) -> bool:
    """True when a review answered on 0..1 although 0-10 was asked (all numbers <= 1, one a fraction)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return bool(numbers) and all(0 <= v <= 1 for v in numbers) and any(0 < v < 1 for v in numbers)


def _as_bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in ("yes", "true", "y", "1", "solo"):
            return True
        if word in ("no", "false", "n", "0"):
            return False
    return default


def parse_review(answer: dict) -> Review:
    """A review answer (scores asked on 0-10) as a Review with 0..1 scores and rejection categories."""
    scale = 1.0 if _unit_scale([answer.get(k) for k in _SCORE_KEYS]) else 10.0
    issues = [snippet(i, 200) for i in _as_list(answer.get("issues")) if isinstance(i, str) and i.strip()][:20]
    solo = _as_bool(answer.get("solo"), True)
    return Review(
        match=normalise_score(_first(answer, "character_match", "match"), scale),
        solo=solo,
        clarity=normalise_score(answer.get("clarity"), scale),
        training_value=normalise_score(answer.get("training_value"), scale),
        caption=_text(answer.get("caption"), 1000),
        issues=issues,
        categories=categories_from_issues(issues, solo),
    )
