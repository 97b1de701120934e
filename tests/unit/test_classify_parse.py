"""Classification answers: JSON extraction, score scales, slug matching, reviews and categories."""

from __future__ import annotations

import base64
import io
import math
import subprocess
import sys

import pytest
from lora_studio.classification.base import (
    ClassifierError,
    NoBackend,
    Review,
    RosterEntry,
    Suggestion,
    categories_from_issues,
    decide,
    extract_json,
    normalise_score,
    parse_review,
    parse_suggestion,
    resolve_slug,
)
from lora_studio.core.categories import CATEGORIES
from lora_studio.core.errors import UpstreamError
from PIL import Image

ROSTER = [
    RosterEntry(slug="zephyra", name="Zephyra", design_prompt="silver hair, green cloak"),
    RosterEntry(slug="kael-storm", name="Kael Storm", design_prompt="red scarf, spiky black hair"),
]


@pytest.mark.parametrize("text", [
    '{"primary": "zephyra", "confidence": 0.9}',
    '```json\n{"primary": "zephyra", "confidence": 0.9}\n```',
    '```\n{"primary": "zephyra", "confidence": 0.9}```',
    'Here is my answer:\n```json\n{"primary": "zephyra", "confidence": 0.9}\n```\nHope it helps!',
    'Sure. {"primary": "zephyra", "confidence": 0.9} That is all.',
    'The set {1, 2} is not it; {"primary": "zephyra", "confidence": 0.9}',
])
def test_extract_json_finds_the_object(text: str) -> None:
    assert extract_json(text) == {"primary": "zephyra", "confidence": 0.9}


def test_extract_json_keeps_braces_inside_strings() -> None:
    assert extract_json('x {"description": "a {curly} brace", "primary": null} y') == {
        "description": "a {curly} brace", "primary": None}


@pytest.mark.parametrize("text", ["", "   ", "I think it is Zephyra.", "[1, 2, 3]", '{"primary": ', None, 42])
def test_extract_json_refuses_answers_without_an_object(text: object) -> None:
    with pytest.raises(ClassifierError) as info:
        extract_json(text)
    assert "\n" not in info.value.message


def test_classifier_error_is_an_upstream_error() -> None:
    assert issubclass(ClassifierError, UpstreamError)
    assert ClassifierError("x").status == 502


@pytest.mark.parametrize(("value", "scale", "expected"), [
    (0.7, 1, 0.7), (1, 1, 1.0), (0, 1, 0.0), (7, 1, 0.7), (85, 1, 0.85), (150, 1, 1.0), (-3, 1, 0.0),
    ("0.8", 1, 0.8), ("80%", 1, 0.8), ("8/10", 1, 0.8), (" 9 ", 1, 0.9),
    (7, 10, 0.7), (10, 10, 1.0), (0.5, 10, 0.05), (70, 10, 0.7),
])
def test_normalise_score_scales(value: object, scale: float, expected: float) -> None:
    assert normalise_score(value, scale) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, True, False, "high", math.nan, math.inf, [0.5], {"v": 1}, "1/0"])
def test_normalise_score_defaults_for_non_numbers(value: object) -> None:
    assert normalise_score(value, default=0.25) == 0.25


@pytest.mark.parametrize(("value", "slug"), [
    ("zephyra", "zephyra"), ("Zephyra", "zephyra"), ("ZEPHYRA ", "zephyra"), ("Kael Storm", "kael-storm"),
    ("kael_storm", "kael-storm"), ("kael-storm", "kael-storm"), ({"slug": "zephyra"}, "zephyra"),
    ("Aria", None), ("null", None), ("None", None), ("unknown", None), ("", None), (None, None), (3, None),
    ("kael", None),
])
def test_resolve_slug_matches_slugs_and_names_of_the_given_roster_only(value: object, slug: str | None) -> None:
    assert resolve_slug(value, ROSTER) == slug


def test_parse_suggestion_normalises_everything() -> None:
    s = parse_suggestion({"primary": "Kael Storm", "others": ["zephyra", "Kael Storm", "Aria", "zephyra"],
                          "confidence": 85, "description": "  Kael\n  on a rooftop  "}, ROSTER)
    assert s == Suggestion("kael-storm", 0.85, ["zephyra"], "Kael on a rooftop", "ollama")


def test_parse_suggestion_unknown_or_null_primary_is_unassigned() -> None:
    unknown = parse_suggestion({"primary": "Aria", "others": "Zephyra", "confidence": 0.99}, ROSTER)
    assert (unknown.character, unknown.confidence, unknown.others) == (None, 0.0, ["zephyra"])
    group = parse_suggestion({"primary": None, "others": ["zephyra", "kael-storm"], "confidence": 0.9,
                              "description": "group shot"}, ROSTER)
    assert (group.character, group.confidence, group.others) == (None, 0.0, ["zephyra", "kael-storm"])
    assert parse_suggestion({}, ROSTER) == Suggestion(None, 0.0, [], "", "ollama")


def test_parse_suggestion_missing_confidence_is_not_confident() -> None:
    s = parse_suggestion({"primary": "zephyra"}, ROSTER)
    assert s.character == "zephyra" and s.confidence == 0.0
    assert decide(s, 0.5) is None


def test_parse_review_scales_and_maps_issues() -> None:
    r = parse_review({"character_match": 7, "solo": False, "clarity": "9", "completeness": 6,
                      "training_value": 4, "caption": "zephyra, silver hair,\n green cloak",
                      "issues": ["Blurry background", "another character on the left", "wrong outfit"]})
    assert r == Review(match=0.7, solo=False, clarity=0.9, training_value=0.4,
                       caption="zephyra, silver hair, green cloak",
                       issues=["Blurry background", "another character on the left", "wrong outfit"],
                       categories=["wrong_appearance", "bad_quality", "not_solo"])


def test_parse_review_reads_a_unit_scale_answer_as_such() -> None:
    r = parse_review({"character_match": 0.9, "solo": "yes", "clarity": 0.5, "training_value": 1})
    assert (r.match, r.solo, r.clarity, r.training_value) == (0.9, True, 0.5, 1.0)
    integers = parse_review({"character_match": 1, "clarity": 0, "training_value": 10})
    assert (integers.match, integers.clarity, integers.training_value) == (0.1, 0.0, 1.0)


def test_parse_review_tolerates_missing_and_odd_fields() -> None:
    r = parse_review({"issues": "too dark", "solo": "no", "caption": 5})
    assert r == Review(0.0, False, 0.0, 0.0, "", ["too dark"], ["bad_quality", "not_solo"])


@pytest.mark.parametrize(("issue", "category"), [
    ("blurry", "bad_quality"), ("low quality", "bad_quality"), ("JPEG artifacts", "bad_quality"),
    ("motion blur", "bad_quality"), ("multiple characters", "not_solo"), ("group shot", "not_solo"),
    ("a crowd behind her", "not_solo"), ("awkward pose", "wrong_pose"), ("wrong expression", "wrong_expression"),
    ("face is hidden", "wrong_expression"), ("wrong art style", "wrong_style"), ("3D render", "wrong_style"),
    ("wrong outfit", "wrong_appearance"), ("hair is too short", "wrong_appearance"),
    ("eye colour differs", "wrong_appearance"), ("off-model design", "wrong_appearance"),
])
def test_issue_keywords_map_to_categories(issue: str, category: str) -> None:
    assert category in categories_from_issues([issue])


def test_categories_are_canonical_and_not_matched_inside_words() -> None:
    assert categories_from_issues(["surface scratches", "interface elements"]) == []
    assert categories_from_issues([]) == []
    assert categories_from_issues([], solo=False) == ["not_solo"]
    found = categories_from_issues(["wrong expression", "group", "blurry", "pose", "style", "outfit"])
    assert found == list(CATEGORIES)


def test_decide_uses_the_threshold() -> None:
    s = Suggestion("zephyra", 0.7, [], "", "ollama")
    assert decide(s, 0.7) == "zephyra"
    assert decide(s, 0.69) == "zephyra"
    assert decide(s, 0.71) is None
    assert decide(Suggestion(None, 1.0, [], "", "ollama"), 0.0) is None


def test_no_backend_leaves_everything_unassigned(tmp_path) -> None:
    assert NoBackend().classify(tmp_path / "any.png", ROSTER) == Suggestion(None, 0.0, [], "", "none")


def test_encode_image_downscales_and_keeps_transparency(tmp_path) -> None:
    from lora_studio.classification.ollama import encode_image

    Image.new("RGB", (1000, 600), (200, 30, 30)).save(tmp_path / "wide.png")
    Image.new("RGBA", (300, 900), (0, 0, 255, 128)).save(tmp_path / "alpha.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "small.jpg")
    wide = Image.open(io.BytesIO(base64.b64decode(encode_image(tmp_path / "wide.png"))))
    assert (wide.format, wide.size) == ("JPEG", (768, 461))
    alpha = Image.open(io.BytesIO(base64.b64decode(encode_image(tmp_path / "alpha.png"))))
    assert (alpha.format, alpha.size, alpha.mode) == ("PNG", (256, 768), "RGBA")
    assert Image.open(io.BytesIO(base64.b64decode(encode_image(tmp_path / "small.jpg")))).size == (40, 30)


def test_importing_the_backends_does_not_import_torch() -> None:
    code = ("import sys; import lora_studio.classification.ollama, lora_studio.classification.embedding, "
            "lora_studio.classification.factory; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
