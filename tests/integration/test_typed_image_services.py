"""The image-side services take typed arguments (the routes validate request bodies with their specs):
what the services still refuse themselves, what the route specs and the services agree on, and that no
service of the image side validates a raw body any more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["datasets/review.py", "datasets/images.py", "datasets/video_ingest.py", "datasets/comfy_outputs.py",
            "datasets/upload_jobs.py"]


@pytest.mark.parametrize("path", SERVICES)
def test_the_services_validate_no_request_bodies(path):
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    imported = {(node.module or "", alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert not [m for m, _ in imported if m.endswith("specs")], f"{path} imports request specs"
    assert ("core.validation", "validate") not in {(m.lstrip("."), n) for m, n in imported}, f"{path} validates bodies"


def test_the_route_specs_agree_with_the_review_service():
    from lora_studio.datasets.review import MAX_BATCH, STATUS_OF
    from lora_studio.server_routes.images import DECIDE_SPEC

    assert DECIDE_SPEC["image_ids"].max_items == MAX_BATCH
    assert set(DECIDE_SPEC["decision"].choices) == set(STATUS_OF)


def test_typed_calls_keep_their_own_checks(studio):
    from lora_studio.core.errors import InvalidInput, NotFound
    from lora_studio.datasets.review import MAX_BATCH

    with pytest.raises(InvalidInput, match="unknown rejection categories: nope"):
        studio.review.reject(1, categories=["nope"])
    with pytest.raises(InvalidInput, match="at least one category or a note"):
        studio.review.reject(1)
    with pytest.raises(InvalidInput, match=f"1 to {MAX_BATCH}"):
        studio.review.decide(list(range(1, MAX_BATCH + 2)), "approve")
    with pytest.raises(InvalidInput, match="'decision' must be one of"):
        studio.review.decide([1], "maybe")
    with pytest.raises(InvalidInput, match="either 'character_id' or 'unassigned'"):
        studio.images.reassign(1, character_id=2, unassigned=True)
    with pytest.raises(InvalidInput, match="either 'character_id' or 'unassigned'"):
        studio.images.reassign(1)
    with pytest.raises(InvalidInput, match="either 'paths'"):
        studio.output_imports.start(1, paths=["a.png"], all_=True)
    with pytest.raises(InvalidInput, match="either 'paths'"):
        studio.output_imports.start(1)
    with pytest.raises(NotFound):  # the checks that need the database stay in the services
        studio.review.reject(12345, note="gone")
    with pytest.raises(NotFound):
        studio.images.update(12345, caption="x")


def test_a_typed_rejection_records_its_reason(studio):
    import sqlalchemy as sa
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import feedback, images

    project = studio.projects.create("Typed")
    cid = studio.characters.create(project.id, "Aiko").id
    now = utcnow()
    with studio.db.begin() as conn:
        iid = conn.execute(images.insert().values(
            character_id=cid, project_id=project.id, rel_path="typed/1.png", sha256="0" * 64, status="pending",
            caption="", source="upload", width=8, height=8, meta={}, created_at=now,
            updated_at=now)).inserted_primary_key[0]
    rejected = studio.review.reject(iid, categories=["not_solo", "not_solo", "bad_quality"], note="two",
                                    regenerate=False)
    assert rejected.status == "rejected" and rejected.regeneration == []
    assert rejected.last_rejection["categories"] == ["not_solo", "bad_quality"]  # de-duplicated, in order
    with studio.db.begin() as conn:
        row = conn.execute(sa.select(feedback.c.categories, feedback.c.note)).one()
    assert (list(row.categories), row.note) == (["not_solo", "bad_quality"], "two")
    decided = studio.review.decide([iid, iid], "reset")
    assert decided["changed"] == [iid] and decided["images"][0].status == "pending"


def test_records_answer_as_the_api_always_did(studio):
    """The Image record becomes JSON only at the route wrapper (server_routes.api.to_json): the same keys,
    in the same order, a rejection's regenerations last."""
    import json

    from lora_studio.datasets.images import ImageRecord, RejectedImage
    from lora_studio.server_routes.api import to_json

    image = ImageRecord(id=1, project_id=2, character_id=None, unassigned=True, rel_path="a/b.png", sha256="0" * 64,
                  status="rejected", caption="c", source="upload", width=8, height=9, metadata={"format": "PNG"},
                  created_at="2026-01-01T00:00:00Z", updated_at=None, decided_at=None, file_missing=False,
                  suggestion={"character_id": 3, "confidence": 0.5}, last_rejection={"categories": [], "note": "n"})
    answered = json.loads(json.dumps({"items": [RejectedImage.of(image, [{"generation_id": 7}])]}, default=to_json))
    assert list(answered["items"][0]) == [
        "id", "project_id", "character_id", "unassigned", "rel_path", "sha256", "status", "caption", "source", "width",
        "height", "metadata", "created_at", "updated_at", "decided_at", "file_missing", "suggestion", "last_rejection",
        "regeneration"]
    assert answered["items"][0]["suggestion"] == {"character_id": 3, "confidence": 0.5}
    assert answered["items"][0]["regeneration"] == [{"generation_id": 7}]


def test_approved_items_are_training_images_with_files(studio, tmp_path):
    """What training, export and the classifier read: the approved images whose files exist, as records."""
    from lora_studio.datasets.images import TrainingImage
    from support.images import image_bytes

    project = studio.projects.create("Train")
    cid = studio.characters.create(project.id, "Aiko").id
    staged = []
    for i in range(3):
        path = tmp_path / f"s{i}.png"
        path.write_bytes(image_bytes(seed=700 + i))
        staged.append((f"{i}.png", path))
    created = studio.images.add_files(cid, staged, caption="aiko").created
    assert len(created) == 3
    studio.review.decide([i.id for i in created], "approve")
    studio.images.update(created[1].id, caption="second")
    studio.images.file_path(created[2].id).unlink()  # approved, but its file is gone: not training data
    items = studio.images.approved_items(cid)
    assert items == [TrainingImage(studio.layout.abs_path(created[0].rel_path), "aiko"),
                     TrainingImage(studio.layout.abs_path(created[1].rel_path), "second")]
    assert all(isinstance(i.path, Path) and i.path.is_file() for i in items)
