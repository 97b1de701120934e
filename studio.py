"""The composition root: one Studio (settings, database, dataset layout, LoRA folder, job runner,
event sink, ComfyUI client, services), built once and handed to routes and nodes."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .core.characters import CharacterService
from .core.comfy_client import ComfyUIClient
from .core.db import Database
from .core.errors import Unavailable
from .core.generation import GenerationService
from .core.host import Host
from .core.jobs import JobRunner
from .core.projects import ProjectService
from .core.settings import Settings
from .datasets.gallery import Gallery
from .datasets.images import ImageService
from .datasets.layout import DatasetLayout
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
        self.projects = ProjectService(self.db)
        self.characters = CharacterService(self.db)
        self.images = ImageService(self.db, self.layout)
        self.training = TrainingService(self.db, host, self.images, self.jobs, settings.data_dir / "jobs",
                                        settings.min_approved_images)
        self.generation = GenerationService(self.db, self.characters, self.comfyui)
        self.gallery = Gallery(host.output_dir)
        log.info("LoRA Studio %s: database %s (schema v%d), data %s", VERSION, self.db.url_for_logs,
                 self.schema_version, settings.data_dir)

    def comfyui(self) -> ComfyUIClient:
        return ComfyUIClient(self.host.comfyui_url())

    def health(self) -> dict:
        return {"status": "ok", "version": VERSION, "host": self.host.kind,
                "database": "postgresql" if self.db.is_postgres else "sqlite", "schema_version": self.schema_version}

    def start(self) -> None:
        self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        self.db.dispose()


class StudioRef:
    """Builds the Studio once, possibly in the background (so ComfyUI's start-up does not wait for
    the database); every user waits for it and gets the start-up error as a 503 if it failed."""

    def __init__(self, factory: Callable[[], Studio]):
        self._factory = factory
        self._studio: Studio | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def build(self) -> None:
        with self._lock:
            if self._ready.is_set():
                return
            try:
                studio = self._factory()
                studio.start()
                self._studio = studio
            except Exception as e:  # reported to every caller; never crash the host
                log.exception("LoRA Studio failed to start")
                self._error = str(e) or type(e).__name__
            finally:
                self._ready.set()

    def build_in_background(self) -> None:
        threading.Thread(target=self.build, name="lora-studio-start", daemon=True).start()

    def ready(self) -> bool:
        return self._studio is not None

    def get(self) -> Studio:
        if not self._ready.is_set():
            self.build()
        if self._studio is None:
            raise Unavailable(f"LoRA Studio could not start: {self._error}")
        return self._studio

    def close(self) -> None:
        if self._studio is not None:
            self._studio.close()

