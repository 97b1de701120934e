"""The composition root: one Studio (settings, database, dataset layout, LoRA folder, job runner,
event sink, ComfyUI client, services), built once and handed to routes and nodes."""

from __future__ import annotations

import logging

from .classification.service import ClassificationService
from .core.characters import CharacterService
from .core.db import Database
from .core.errors import Conflict
from .core.feedback import FeedbackService
from .core.host import Host
from .core.jobs import JobRunner
from .core.projects import ProjectService
from .core.samplers import SamplerNames
from .core.settings import Settings
from .datasets.comfy_outputs import OutputImports
from .datasets.export import Export, export_zip
from .datasets.gallery import Gallery
from .datasets.images import ImageService
from .datasets.layout import DatasetLayout
from .datasets.reconcile import reconcile
from .datasets.review import ReviewService
from .datasets.upload_jobs import ImageUploads
from .datasets.video_ingest import VideoIngest
from .generation.client import ComfyUIClient
from .generation.regenerate import Regenerator
from .generation.service import GenerationService
from .training.service import TrainingService

log = logging.getLogger("lora_studio.studio")

VERSION = "0.1.0"


class Studio:
    def __init__(self, settings: Settings, host: Host):
        self.settings = settings
        self.host = host
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.effective_database_url)
        self.schema_version = self.db.migrate()
        self.layout = DatasetLayout(settings.effective_datasets_dir)
        self.jobs = JobRunner(self.db, host.emit, workers=settings.job_workers)
        self.samplers = SamplerNames(self.comfyui)  # ComfyUI's sampler/scheduler names, cached briefly
        self.projects = ProjectService(self.db, self.samplers)
        self.characters = CharacterService(self.db)
        self.feedback = FeedbackService(self.db, self.projects, self.characters)
        self.images = ImageService(self.db, self.layout, settings.near_duplicate_distance)
        self.training = TrainingService(self.db, host, self.images, self.jobs, settings.data_dir / "jobs",
                                        settings.min_approved_images, characters=self.characters,
                                        comfyui=self.comfyui)
        self.generation = GenerationService(self.db, self.characters, self.comfyui, self.samplers)
        self.gallery = Gallery(host.output_dir)
        self.regenerator = Regenerator(self.db, self.images, self.generation, self.jobs, self.layout,
                                       target_approved=settings.min_approved_images,
                                       max_in_flight=settings.regenerate_max_in_flight)
        self.review = ReviewService(self.db, self.regenerator, settings.auto_regenerate)
        self.classification = ClassificationService(self.db, self.images, self.review, self.characters, self.jobs,
                                                    settings)
        self.jobs.register("reconcile", lambda ctx: reconcile(self.db, self.layout, ctx.progress))
        self.video_ingest = VideoIngest(self.images, self.characters, self.jobs, self.layout, settings)
        self.output_imports = OutputImports(self.images, self.characters, self.gallery, self.jobs, self.layout)
        self.uploads = ImageUploads(self.db, self.images, self.jobs, self.layout)
        log.info("LoRA Studio %s: database %s (schema v%d), data %s", VERSION, self.db.url_for_logs,
                 self.schema_version, settings.data_dir)

    def export(self, character_id: int, repeats: int, class_token: str) -> Export:
        """A zip of the approved set in a temporary file of its own: the caller sends it, then removes it."""
        return export_zip(self.images, self.characters.get(character_id), self.settings.data_dir / "exports",
                          repeats, class_token)

    def delete_character(self, character_id: int) -> dict:
        """Delete a character: its images (files, captions, statuses) go to its project's unassigned pool first,
        so nothing curated is lost; its feedback, decisions and LoRA records go with it (LoRA files stay).
        Refused (409) while one of its jobs is queued or running."""
        self.characters.get(character_id)  # 404 first
        busy = [job for status in ("queued", "running")
                for job in self.jobs.list(status=status, character_id=character_id)["items"]]
        if busy:
            raise Conflict(f"the character has a {busy[0]['kind']} job (#{busy[0]['id']}) {busy[0]['status']}: "
                           "cancel it or wait for it first")
        moved = self.images.release_character(character_id)
        return {**self.characters.delete(character_id), "images_to_pool": moved}

    def comfyui(self) -> ComfyUIClient:
        return ComfyUIClient(self.host.comfyui_url())

    def health(self) -> dict:
        return {"status": "ok", "version": VERSION, "host": self.host.kind,
                "database": "postgresql" if self.db.is_postgres else "sqlite", "schema_version": self.schema_version}

    def start(self) -> None:
        # first fail the jobs a crashed studio left running (each kind cleans up after its own: an
        # upload's staged files), then sweep staging folders nobody owns any more, then run jobs
        self.jobs.fail_orphans()
        self.uploads.sweep()
        self.jobs.start()
        self.jobs.submit("reconcile", {})  # files added or removed while the studio was not running

    def close(self) -> None:
        self.jobs.stop()
        self.db.dispose()
