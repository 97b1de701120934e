"""core.validation: a list field must describe its items, and the validator checks every item."""

from __future__ import annotations

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.core.validation import ID_MAX, Field, spec_schema, validate


def test_a_list_field_without_an_item_description_is_refused_when_declared():
    with pytest.raises(TypeError, match="must describe its items"):
        Field(list, required=True)
    with pytest.raises(TypeError, match="must describe its items"):
        Field(list, item=Field(int), items=("a",))  # one description, not two
    with pytest.raises(TypeError, match="describe lists"):
        Field(str, item=Field(int))
    with pytest.raises(TypeError, match="describe lists"):
        Field(int, max_items=3)
    Field(list, item=Field(int))  # these are fine
    Field(list, items=())


IDS = {"ids": Field(list, required=True, item=Field(int, min=1, max=ID_MAX), min_items=1, max_items=3)}
NAMES = {"names": Field(list, items=())}
CHOSEN = {"chosen": Field(list, items=("a", "b"))}
TERMS = {"terms": Field(list, item=Field(str, required=True, max_len=5))}


@pytest.mark.parametrize(("spec", "body", "message"), [
    (IDS, {"ids": [1, "2"]}, "'ids[1]' must be of type integer"),
    (IDS, {"ids": [1, True]}, "'ids[1]' must be of type integer"),  # a bool is not an id
    (IDS, {"ids": [1, 2.0]}, "'ids[1]' must be of type integer"),
    (IDS, {"ids": [[1]]}, "'ids[0]' must be of type integer"),
    (IDS, {"ids": [0]}, "'ids[0]' must be at least 1"),
    (IDS, {"ids": [ID_MAX + 1]}, "'ids[0]' must be at most"),
    (IDS, {"ids": []}, "at least 1 item"),
    (IDS, {"ids": [1, 2, 3, 4]}, "at most 3 items"),
    (NAMES, {"names": ["x", 3]}, "'names[1]' must be a string"),
    (NAMES, {"names": [{"path": "x"}]}, "'names[0]' must be a string"),
    (NAMES, {"names": ["a\x00b"]}, "NUL"),
    (CHOSEN, {"chosen": ["a", "c"]}, "'chosen[1]' must be one of a, b"),
    (TERMS, {"terms": ["ok", None]}, "'terms[1]' must be of type string"),
    (TERMS, {"terms": ["  "]}, "'terms[0]' must not be empty"),
    (TERMS, {"terms": ["toolong"]}, "'terms[0]' is longer than 5"),
])
def test_every_item_of_a_list_is_checked(spec, body, message):
    with pytest.raises(InvalidInput) as e:
        validate(body, spec)
    assert message in e.value.message


def test_valid_lists_pass_and_string_items_are_trimmed_when_typed():
    assert validate({"ids": [1, 2]}, IDS) == {"ids": [1, 2]}
    assert validate({"names": ["x", "y"]}, NAMES) == {"names": ["x", "y"]}
    assert validate({"chosen": ["b"]}, CHOSEN) == {"chosen": ["b"]}
    assert validate({"terms": [" red "]}, TERMS) == {"terms": ["red"]}


def test_the_item_description_is_published():
    assert spec_schema(IDS)["properties"]["ids"]["items"]["type"] == "integer"
    assert spec_schema(CHOSEN)["properties"]["chosen"]["items"] == {"type": "string", "enum": ["a", "b"]}
    assert spec_schema(NAMES)["properties"]["names"]["items"] == {"type": "string"}
