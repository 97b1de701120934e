"""Small text helpers shared by services: slugs and comma-separated prompt terms."""

from __future__ import annotations

import re

_SLUG_STRIP = re.compile(r"[^\w]+", re.UNICODE)


def slugify(name: str, max_len: int = 80) -> str:
    """Lower-case word characters joined by '-': safe as one folder name (no '.', '/', '\\')."""
    slug = _SLUG_STRIP.sub("-", name.strip().lower()).strip("-_")
    return slug[:max_len].strip("-_")


def split_terms(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def merge_terms(*parts: str | list[str]) -> str:
    """Join prompt parts as comma-separated terms, keeping the first occurrence of each term
    (compared case-insensitively) so the result is stable and has no duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for part in parts:
        for term in split_terms(part) if isinstance(part, str) else part:
            key = term.lower()
            if key not in seen:
                seen.add(key)
                out.append(term)
    return ", ".join(out)
