"""Declarative checks of JSON input; the same specs describe request bodies in the OpenAPI document."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput


@dataclass(frozen=True)
class Field:
    type: type  # str, int, float, bool, list, dict
    required: bool = False
    min: float | None = None
    max: float | None = None
    max_len: int | None = None
    choices: tuple | None = None
    items: tuple | None = None  # for lists of strings: the allowed values (empty tuple: any string)
    description: str = ""

    def json_schema(self) -> dict:
        kind = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}[self.type]
        out: dict[str, Any] = {"type": kind}
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        if self.max_len is not None:
            out["maxLength"] = self.max_len
        if self.type is str and self.required:
            out["minLength"] = 1
        if self.items is not None:
            out["items"] = {"type": "string", "enum": list(self.items)} if self.items else {"type": "string"}
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
        value = float(value)
    if not isinstance(value, f.type) or (f.type in (int, float) and isinstance(value, bool)):
        raise InvalidInput(f"'{name}' must be of type {f.json_schema()['type']}")
    if isinstance(value, str):
        value = value.strip()
        if "\x00" in value:
            raise InvalidInput(f"'{name}' must not contain NUL characters")
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
    return value


_DECIMAL = re.compile(r"[0-9]+")


def parse_uint(value: str, name: str, max_digits: int = 18) -> int:
    """A non-negative integer written in ASCII digits (str.isdigit() also accepts '³', '٣', …)."""
    if not _DECIMAL.fullmatch(value) or len(value) > max_digits:
        raise InvalidInput(f"'{name}' must be a non-negative integer")
    return int(value)


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
    return parse_uint(value, "cursor")
