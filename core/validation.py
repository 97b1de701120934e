"""Declarative checks of JSON input; the same specs describe request bodies in the OpenAPI document."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput

# What the databases store: SQLite and PostgreSQL BIGINT are signed 64-bit; larger JSON integers
# would overflow in the driver (a 500), so they are refused as bad input first.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Record ids are INTEGER columns (signed 32-bit in PostgreSQL): a larger id names nothing, and
# PostgreSQL would refuse to compare it (a 500), so it is refused as bad input.
ID_MAX = 2**31 - 1
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class Field:
    type: type  # str, int, float, bool, list, dict (bytes: a file in a multipart body's description)
    required: bool = False
    min: float | None = None
    max: float | None = None
    max_len: int | None = None
    choices: tuple | None = None
    items: tuple | None = None  # for lists of strings: the allowed values (empty tuple: any string)
    item: Field | None = None  # for lists of other things: each item's own check (e.g. ids)
    min_items: int | None = None
    max_items: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        """A list must say what it holds (so the validator checks every item, and no service has to);
        item descriptions belong to lists only."""
        if self.type is list:
            if (self.item is None) == (self.items is None):
                raise TypeError("Field(list) must describe its items: item=Field(...) for typed items, or "
                                "items=(...) for strings (the allowed values; () for any string) — one of them")
        elif self.item is not None or self.items is not None or self.min_items is not None \
                or self.max_items is not None:
            raise TypeError(f"item, items, min_items and max_items describe lists, not {self.type.__name__}")

    def json_schema(self) -> dict:
        kind = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
                bytes: "string"}[self.type]
        out: dict[str, Any] = {"type": kind}
        if self.type is bytes:  # a file part of a multipart body
            out["format"] = "binary"
        low, high = self.min, self.max
        if self.type is int:  # what the database can hold, unless the field says narrower
            low = INT64_MIN if low is None else max(low, INT64_MIN)
            high = INT64_MAX if high is None else min(high, INT64_MAX)
        if low is not None:
            out["minimum"] = int(low) if self.type is int else low
        if high is not None:
            out["maximum"] = int(high) if self.type is int else high
        if self.max_len is not None:
            out["maxLength"] = self.max_len
        if self.type is str and self.required:
            out["minLength"] = 1
        if self.item is not None:
            out["items"] = self.item.json_schema()
        elif self.items is not None:
            out["items"] = {"type": "string", "enum": list(self.items)} if self.items else {"type": "string"}
        if self.min_items is not None:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        if self.choices:
            out["enum"] = list(self.choices)
        if self.description:
            out["description"] = self.description
        return out


Spec = dict[str, Field]


def spec_schema(spec: Spec) -> dict:
    return {
        "type": "object",
        "properties": {name: f.json_schema() for name, f in spec.items()},
        "required": [name for name, f in spec.items() if f.required],
        "additionalProperties": False,
    }


def validate(body: Any, spec: Spec, *, partial: bool = False) -> dict:
    """Return the known fields of `body`, checked and converted; unknown fields are refused."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, f in spec.items():
        if name not in body:
            if f.required and not partial:
                raise InvalidInput(f"'{name}' is required")
            continue
        out[name] = _check(name, body[name], f)
    return out


def _check(name: str, value: Any, f: Field) -> Any:
    if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"'{name}' is out of range")
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"'{name}' must be a finite number")
    if not isinstance(value, f.type) or (f.type in (int, float) and isinstance(value, bool)):
        raise InvalidInput(f"'{name}' must be of type {f.json_schema()['type']}")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInput(f"'{name}' is out of range (a signed 64-bit integer)")
    if isinstance(value, str):
        value = check_text(name, value.strip())
        if f.required and not value:
            raise InvalidInput(f"'{name}' must not be empty")
        if f.max_len is not None and len(value) > f.max_len:
            raise InvalidInput(f"'{name}' is longer than {f.max_len} characters")
    if f.min is not None and value < f.min:
        raise InvalidInput(f"'{name}' must be at least {f.min}")
    if f.max is not None and value > f.max:
        raise InvalidInput(f"'{name}' must be at most {f.max}")
    if f.choices is not None and value not in f.choices:
        raise InvalidInput(f"'{name}' must be one of {', '.join(map(str, f.choices))}")
    if isinstance(value, list):
        value = _check_items(name, value, f)
    return value


def _check_items(name: str, value: list, f: Field) -> list:
    if f.min_items is not None and len(value) < f.min_items:
        raise InvalidInput(f"'{name}' must hold at least {f.min_items} item(s)")
    if f.max_items is not None and len(value) > f.max_items:
        raise InvalidInput(f"'{name}' must hold at most {f.max_items} items")
    if f.item is not None:
        return [_check(f"{name}[{i}]", v, f.item) for i, v in enumerate(value)]
    if f.items is not None:
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise InvalidInput(f"'{name}[{i}]' must be a string")
            check_text(f"{name}[{i}]", v)
            if f.items and v not in f.items:
                raise InvalidInput(f"'{name}[{i}]' must be one of {', '.join(f.items)}")
    return value


def check_text(name: str, value: str) -> str:
    """Text the databases and files can hold: no NUL (PostgreSQL refuses it in text) and nothing
    that cannot be written as UTF-8 (a lone surrogate such as JSON's "\\ud800")."""
    if "\x00" in value:
        raise InvalidInput(f"'{name}' must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"'{name}' is not valid Unicode text (a lone surrogate)") from None
    return value


def check_json_value(value: Any, where: str = "body") -> None:
    """Refuse, anywhere in a parsed JSON document, what no service can store: integers beyond
    signed 64-bit and keys or strings with NUL or lone surrogates (iterative: no recursion limit)."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        v, at, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(f"the JSON document is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, float):
            if not math.isfinite(v):  # 1e999 parses as infinity
                raise InvalidInput(f"'{at}' must be a finite number")
            continue
        if isinstance(v, int):
            if not INT64_MIN <= v <= INT64_MAX:
                raise InvalidInput(f"'{at}' is out of range (a signed 64-bit integer)")
        elif isinstance(v, str):
            check_text(at, v)
        elif isinstance(v, dict):
            for k, item in v.items():
                check_text(f"{at} key", k)
                stack.append((item, k[:50], depth + 1))
        elif isinstance(v, list):
            stack.extend((item, f"{at}[{i}]", depth + 1) for i, item in enumerate(v))


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"the request body is not valid JSON ({name} is not a JSON number)")


def parse_json(raw: bytes) -> Any:
    """A request body parsed and checked (see check_json_value); bad input is an InvalidInput."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidInput("the request body is not valid JSON") from None
    check_json_value(value)
    return value


def check_query_value(name: str, value: str) -> str:
    """A query-string value as the handlers may use it (aiohttp decodes %00 to NUL)."""
    return check_text(name, value)


_DECIMAL = re.compile(r"[0-9]+")


def parse_uint(value: str, name: str, max_digits: int = 18) -> int:
    """A non-negative integer written in ASCII digits (str.isdigit() also accepts '³', '٣', …)."""
    if not _DECIMAL.fullmatch(value) or len(value) > max_digits:
        raise InvalidInput(f"'{name}' must be a non-negative integer")
    return int(value)


def parse_id(value: str, name: str) -> int:
    """A record id from a path or query string: ASCII digits, at most ID_MAX."""
    n = parse_uint(value, name)
    if n > ID_MAX:
        raise InvalidInput(f"'{name}' is not an id (ids are at most {ID_MAX})")
    return n


def parse_limit(value: str | None, default: int = 50, maximum: int = 500) -> int:
    if value is None or value == "":
        return default
    n = parse_uint(value, "limit")
    if not 1 <= n <= maximum:
        raise InvalidInput(f"'limit' must be between 1 and {maximum}")
    return n


def parse_id_cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    return parse_id(value, "cursor")
