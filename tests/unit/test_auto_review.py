"""The automatic review's verdict: which scores reject an image and the rejection categories they mean."""

from __future__ import annotations

import pytest
from lora_studio.classification.base import Review, parse_review, review_verdict


def review(match=0.9, clarity=0.9, value=0.9, solo=True, issues=()) -> Review:
    return parse_review({"character_match": match, "clarity": clarity, "training_value": value, "solo": solo,
                         "issues": list(issues)})


@pytest.mark.parametrize(("verdict", "categories", "reason"), [
    (review(match=0.2), ["wrong_appearance"], "character match 0.20"),  # was bad_quality
    (review(clarity=0.1), ["bad_quality"], "clarity 0.10"),
    (review(solo=False), ["not_solo"], "not solo"),
    (review(value=0.3), ["bad_quality"], "training value 0.30"),  # nothing more specific
    (review(match=0.2, clarity=0.3), ["wrong_appearance", "bad_quality"], "character match 0.20, clarity 0.30"),
    (review(match=0.1, solo=False), ["wrong_appearance", "not_solo"], "character match 0.10, not solo"),
    # issue text adds its categories to what the scores say; the note quotes the issues
    (review(match=0.2, issues=["blurry lines"]), ["wrong_appearance", "bad_quality"], "blurry lines"),
    (review(clarity=0.2, issues=["wrong art style"]), ["wrong_style", "bad_quality"], "wrong art style"),
    (review(solo=False, issues=["two girls", "bad pose"]), ["not_solo", "wrong_pose"], "two girls; bad pose"),
])
def test_low_scores_map_to_their_categories(verdict, categories, reason) -> None:
    assert review_verdict(verdict, 0.4) == (categories, reason)


def test_a_verdict_above_the_bar_rejects_nothing() -> None:
    assert review_verdict(review(match=0.4, clarity=0.5, value=0.6), 0.4) is None
    assert review_verdict(review(issues=["slightly blurry"]), 0.4) is None  # issues alone do not reject
    assert review_verdict(review(match=0.5), 0.6) == (["wrong_appearance"], "character match 0.50")
