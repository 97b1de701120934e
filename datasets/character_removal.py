"""Deleting a character without losing its curated images: they move to the project's unassigned pool
first, then the character's records go (feedback, LoRA records; LoRA files and the dataset folder stay).
Refused while one of the character's jobs is queued or running."""

from __future__ import annotations

from ..core.characters import CharacterService
from ..core.errors import Conflict
from ..core.jobs import JobRunner
from .images import ImageService


class CharacterRemoval:
    def __init__(self, characters: CharacterService, images: ImageService, jobs: JobRunner):
        self.characters, self.images, self.jobs = characters, images, jobs

    def delete(self, character_id: int) -> dict:
        """Delete a character: its images (files, captions, statuses) go to its project's unassigned pool first,
        so nothing curated is lost; its feedback, decisions and LoRA records go with it (LoRA files stay).
        Refused (409) while one of its jobs is queued or running."""
        self.characters.get(character_id)  # 404 first
        busy = [job for status in ("queued", "running")
                for job in self.jobs.list(status=status, character_id=character_id).items]
        if busy:
            raise Conflict(f"the character has a {busy[0].kind} job (#{busy[0].id}) {busy[0].status}: "
                           "cancel it or wait for it first")
        moved = self.images.release_character(character_id)
        return {**self.characters.delete(character_id), "images_to_pool": moved}
