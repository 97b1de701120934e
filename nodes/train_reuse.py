"""Train LoRA as a cache: the fingerprint of a training (the character, the base model, the options and the
approved set) and the LoRA an earlier training with the same fingerprint wrote.

The approved set is (image content sha256, caption) per approved image — what the trainer hashes into the LoRA
file as `lora_studio_dataset_sha256` (training/kohya.py), so an earlier LoRA is recognised from its own file:
the job's payload holds the resolved options, the file holds the data it learned from. The studio keeps no
other record of it. (Service side, this would be `TrainingService.fingerprint(character_id, request)` and
`TrainingService.trained_like(character_id, request) -> LoraModel | None`.)"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..training import config
from ..training.architecture import read_safetensors_header
from ..training.errors import TrainingError
from ..training.kohya import dataset_sha256
from .character import lora_file

if TYPE_CHECKING:
    from ..core.jobs import Job
    from ..studio import Studio
    from ..training.request import TrainRequest

PAGE = 1000
RECENT_TRAININGS = 100  # succeeded trainings of the character looked at, newest first
DATASET_KEY = "lora_studio_dataset_sha256"


@dataclass(frozen=True)
class ApprovedSet:
    count: int
    sha256: str  # training/kohya.py: dataset_sha256 over (image sha256, caption)


@dataclass(frozen=True)
class Reused:
    job: Job
    file_name: str


def approved_set(s: Studio, character_id: int) -> ApprovedSet:
    from ..datasets.images import ImageFilters  # with SQLAlchemy: not while ComfyUI loads the pack

    entries, cursor = [], None
    while True:
        page = s.images.search(ImageFilters(character_id=character_id, status="approved"), limit=PAGE, cursor=cursor)
        entries += [(i.sha256, i.caption) for i in page.items if not i.file_missing]
        if page.next_cursor is None:
            return ApprovedSet(len(entries), dataset_sha256(entries))
        cursor = int(page.next_cursor)


def fingerprint(character_id: int, request: TrainRequest, approved: ApprovedSet) -> str:
    """Stable for the same character, base model, options given and approved set."""
    key = {"character": character_id, "base_model": request.base_model, "options": dict(request.options),
           "dataset": approved.sha256}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _same_options(job: Job, request: TrainRequest) -> bool:
    payload = job.payload or {}
    if payload.get("base_model") != request.base_model:
        return False
    try:  # the defaults the request gets for the architecture that job found in the same base model
        expected = config.resolve(request.options, payload.get("arch"))
    except Exception:  # noqa: BLE001 - an old payload that no longer resolves is simply no match
        return False
    return all(payload.get(name) == value for name, value in expected.items())


def _dataset_of(s: Studio, file_name: str) -> str | None:
    path = lora_file(s, file_name)
    if path is None:
        return None
    try:
        return read_safetensors_header(path)[1].get(DATASET_KEY)
    except TrainingError:
        return None


def trained_like(s: Studio, character_id: int, request: TrainRequest, approved: ApprovedSet) -> Reused | None:
    """The newest LoRA, still in the loras folder, that a succeeded training of this character made with the same
    base model and options from the same approved set."""
    jobs = s.jobs.list(status="succeeded", kind="train", character_id=character_id, limit=RECENT_TRAININGS).items
    for job in jobs:
        name = (job.result or {}).get("file_name")
        if isinstance(name, str) and _same_options(job, request) and _dataset_of(s, name) == approved.sha256:
            return Reused(job, name)
    return None
