"""Keyset pagination for lists in a stable order other than by id alone (by name, by step, …).

The cursor is opaque to clients: the sort key of the last item of a page, as URL-safe base64 of a
JSON array. A keyset cursor (rather than an offset) keeps later pages right while rows are added
or removed between requests."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from .errors import InvalidInput
from .validation import INT64_MAX, INT64_MIN, check_text

T = TypeVar("T")

_MAX_CURSOR = 2000  # characters; a name is at most 200, so a real cursor is far shorter
_BAD = "'cursor' is not valid: pass the next_cursor of the previous page"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its records, and the cursor of the next page (None on the last page)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: Any) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(value: str | None, types: tuple[type, ...]) -> tuple | None:
    """The sort key a cursor holds, checked against `types` (e.g. (str, int)); None for no cursor."""
    if value is None or value == "":
        return None
    if len(value) > _MAX_CURSOR:
        raise InvalidInput(_BAD)
    try:
        key = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput(_BAD) from None
    if (not isinstance(key, list) or len(key) != len(types)
            or not all(_fits(v, t) for v, t in zip(key, types, strict=True))):
        raise InvalidInput(_BAD)
    return tuple(key)


def _fits(value: Any, type_: type) -> bool:
    """A value of the key's type that the databases can compare with (a cursor is client input)."""
    if not isinstance(value, type_) or isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, str):
        try:
            check_text("cursor", value)  # no NUL, no lone surrogates
        except InvalidInput:
            return False
    return True


def after(columns: list[sa.ColumnElement], key: tuple) -> sa.ColumnElement[bool]:
    """Rows after `key` in ascending order of `columns` (the list's ORDER BY, ending with a unique column)."""
    first, *rest = columns
    if not rest:
        return first > key[0]
    return sa.or_(first > key[0], sa.and_(first == key[0], after(rest, key[1:])))
