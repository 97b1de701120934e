"""The composition root: one Studio (settings, database, dataset layout, LoRA folder, job runner,
event sink, ComfyUI client, services), built once and handed to routes and nodes. It builds and wires
only: every workflow lives in a service; each attribute is typed so a reader (or an IDE) can follow
`studio().training.start` to its code."""

from __future__ import annotations

import logging

from .classification.service import ClassificationService
from .core.characters import CharacterService
from .core.db import Database
from .core.feedback import FeedbackService
from .core.host import Host
from .core.jobs import JobRunner
from .core.projects import ProjectService
from .core.samplers import SamplerNames
from .core.settings import Settings
from .datasets.character_removal import CharacterRemoval
from .datasets.comfy_outputs import OutputImports
from .datasets.export import ExportService
from .datasets.gallery import Gallery
from .datasets.gallery_index import GalleryIndex
from .datasets.images import ImageService
from .datasets.layout import DatasetLayout
from .datasets.reconcile import reconcile
from .datasets.review import ReviewService
from .datasets.thumbnails import DEFAULT_MAX_BYTES, Thumbnails
from .datasets.upload_jobs import ImageUploads
from .datasets.video_ingest import VideoIngest
from .generation.batch import BatchGenerator
from .generation.client import ComfyUIClient
from .generation.progress import ProgressWatcher
from .generation.regenerate import Regenerator
from .generation.service import GenerationService
from .generation.template_store import TemplateStore
from .training.catalog import BaseModels
from .training.service import TrainingService

log = logging.getLogger("lora_studio.studio")

VERSION = "0.1.0"


class Studio:
    settings: Settings
    host: Host
    db: Database
    schema_version: int
    layout: DatasetLayout
    jobs: JobRunner
    samplers: SamplerNames
    projects: ProjectService
    characters: CharacterService
    feedback: FeedbackService
    images: ImageService
    base_models: BaseModels
    training: TrainingService
    generation: GenerationService
    templates: TemplateStore
    progress: ProgressWatcher
    batch_generation: BatchGenerator
    gallery_index: GalleryIndex
    gallery: Gallery
    regenerator: Regenerator
    review: ReviewService
    classification: ClassificationService
    video_ingest: VideoIngest
    output_imports: OutputImports
    uploads: ImageUploads
    exports: ExportService
    character_removal: CharacterRemoval
    thumbnails: Thumbnails

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
        self.base_models = BaseModels(host)  # what training can use (GET /models, the Train LoRA node)
        self.training = TrainingService(self.db, host, self.images, self.jobs, settings.data_dir / "jobs",
                                        settings.min_approved_images, base_models=self.base_models,
                                        characters=self.characters, comfyui=self.comfyui)
        self.templates = TemplateStore(self.db)
        self.generation = GenerationService(self.db, self.characters, self.comfyui, self.samplers, images=self.images,
                                            templates=self.templates, gpu_busy=self.training.gpu_busy)
        self.progress = ProgressWatcher(self.generation)  # follows generations on ComfyUI's websocket
        self.generation.on_queued = self.progress.ensure_started
        self.batch_generation = BatchGenerator(self.generation, self.images, self.jobs, self.layout)
        self.gallery_index = GalleryIndex(self.db, host.output_dir)  # its thread starts in start()
        self.gallery = Gallery(host.output_dir, self.gallery_index, images=self.images, layout=self.layout,
                               jobs=self.jobs)
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
        self.exports = ExportService(self.images, self.characters, settings.data_dir / "exports")
        self.character_removal = CharacterRemoval(self.characters, self.images, self.jobs)
        self.thumbnails = Thumbnails(settings.data_dir / "thumbnails", DEFAULT_MAX_BYTES,
                                     image_file=self.images.file_path, output_file=self.gallery.file)
        log.info("LoRA Studio %s: database %s (schema v%d), data %s", VERSION, self.db.url_for_logs,
                 self.schema_version, settings.data_dir)

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
        if self.generation.active_ids():  # generations queued before a restart: follow them to their end
            self.progress.ensure_started()
        self.gallery_index.start()  # indexes the output folder in its own thread (never blocks start-up)

    def close(self) -> None:
        self.gallery_index.stop()
        self.progress.stop()
        self.jobs.stop()
        self.db.dispose()
