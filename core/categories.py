"""Rejection categories and the negative-prompt terms each one teaches a character."""

from __future__ import annotations

from .errors import InvalidInput

# The original system's six categories and their default negative terms.
CATEGORIES: dict[str, str] = {
    "wrong_appearance": "wrong colors, inaccurate character design, wrong outfit",
    "wrong_style": "wrong art style, inconsistent style",
    "bad_quality": "blurry, low quality, artifacts, distorted",
    "not_solo": "multiple characters, crowd, group shot",
    "wrong_pose": "awkward pose, unnatural position",
    "wrong_expression": "wrong facial expression, out of character",
}


def validate_categories(categories: object) -> list[str]:
    if categories is None:
        return []
    if isinstance(categories, str):  # a single category is a valid answer, not a parse error
        categories = [categories]
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise InvalidInput("categories must be a list of category names")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise InvalidInput(f"unknown rejection categories: {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(categories))
