"""The OpenAPI document describes every JSON route's success answer (not a bare object), every `$ref`
in it resolves, and the record schemas list exactly the keys the code that builds those records
returns (a field added to a record without documenting it fails here). The live answers are held to
these schemas by the fuzz test (tests/integration/test_fuzz_api.py)."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from lora_studio.server_routes import build_api
from lora_studio.server_routes.api import PREFIX, to_json
from lora_studio.server_routes.openapi import openapi_document

REF = "#/components/schemas/"


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi_document(build_api())


def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].removeprefix(REF)]
    return schema


def _success(doc: dict, spec) -> dict:
    return doc["paths"][PREFIX + spec.path][spec.method.lower()]["responses"][str(spec.status)]


def _refs(node, where: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield where, v
            else:
                yield from _refs(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _refs(v, f"{where}/{i}")


def test_every_json_route_documents_its_success_answer(doc):
    bare = []
    for spec in build_api().routes:
        content = _success(doc, spec)["content"]
        if spec.binary:  # files keep their media type
            assert list(content) == [spec.media], spec.path
            assert content[spec.media]["schema"] == {"type": "string", "format": "binary"}
            continue
        schema = _resolve(doc, content["application/json"]["schema"])
        if not (schema.get("properties") or schema.get("allOf")):
            bare.append(f"{spec.method} {spec.path}")
    assert not bare, f"success answers documented as a bare object (declare api.route(..., response=...)): {bare}"


def test_every_ref_resolves(doc):
    schemas = doc["components"]["schemas"]
    refs = list(_refs(doc))
    assert len(refs) > len(build_api().routes)  # errors and answers refer to components
    broken = [(where, ref) for where, ref in refs if not ref.startswith(REF) or ref.removeprefix(REF) not in schemas]
    assert not broken


def test_record_schemas_are_open_and_require_known_keys(doc):
    """Open objects (a new field is not a breaking change); every required key is a documented property."""
    for name, schema in doc["components"]["schemas"].items():
        for node in [schema, *schema.get("allOf", [])]:
            if "properties" in node and name != "Error":
                assert node.get("additionalProperties") is True, name
                assert set(node["required"]) <= set(node["properties"]), name


class _Row:
    """A database row whose every column is NULL: enough for the record builders to list their keys."""

    def __getattr__(self, name):
        return None


def _keys(doc: dict, name: str) -> tuple[set, set]:
    schema = doc["components"]["schemas"][name]
    return set(schema["required"]), set(schema["properties"])


@pytest.mark.parametrize("name, module, builder, args", [
    ("Image", "lora_studio.datasets.images", "image_record", ()),
    ("Job", "lora_studio.core.jobs", "job_record", ()),
    ("Lora", "lora_studio.training.service", "lora_record", ()),
    ("Project", "lora_studio.core.projects", "project_record", ()),
    ("Style", "lora_studio.core.projects", "style_record", ()),
    ("Character", "lora_studio.core.characters", "character_record", ("academy",)),  # every route gives the project slug
    ("Generation", "lora_studio.generation.service", "generation_record", ()),
])
def test_record_schema_matches_its_builder(doc, name, module, builder, args):
    required, documented = _keys(doc, name)
    record = getattr(importlib.import_module(module), builder)(_Row(), *args)
    assert dataclasses.is_dataclass(record), f"{name}: services pass records as dataclasses"
    keys = set(to_json(record))  # as the API answers it
    assert required <= keys, f"{name}: documented as always present but not built: {required - keys}"
    assert keys <= documented, f"{name}: built but not documented: {keys - documented}"
