"""The Train LoRA node against stand-ins of ComfyUI's `comfy.utils` (ProgressBar + the global hook
main.py installs, which checks for an interrupt first) and `comfy.model_management` (the interrupt
flag), built like ComfyUI's own, and a real studio running a real tiny training job."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest
from support.node_studio import give_lora, succeeded_training
from support.train_cfg import add_approved_images

AIKO = "Moon / Aiko"


def comfy_standins() -> types.SimpleNamespace:
    """`comfy.utils` and `comfy.model_management` as ComfyUI has them (comfy/utils.py ProgressBar,
    model_management's interrupt functions, main.py's progress hook), recording what the hook got."""
    mm = types.ModuleType("comfy.model_management")

    class InterruptProcessingException(Exception):
        pass

    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_processing_mutex = threading.RLock()
    mm.interrupt_processing = False

    def interrupt_current_processing(value=True):
        with mm.interrupt_processing_mutex:
            mm.interrupt_processing = value

    def processing_interrupted():
        with mm.interrupt_processing_mutex:
            return mm.interrupt_processing

    def throw_exception_if_processing_interrupted():
        with mm.interrupt_processing_mutex:
            if mm.interrupt_processing:
                mm.interrupt_processing = False
                raise InterruptProcessingException()

    mm.unloads = []
    mm.unload_all_models = lambda: mm.unloads.append("unload_all_models")
    mm.soft_empty_cache = lambda force=False: mm.unloads.append("soft_empty_cache")
    mm.interrupt_current_processing = interrupt_current_processing
    mm.processing_interrupted = processing_interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    utils = types.ModuleType("comfy.utils")
    utils.PROGRESS_BAR_HOOK = None

    def set_progress_bar_global_hook(function):
        utils.PROGRESS_BAR_HOOK = function

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total
            self.current = 0
            self.hook = utils.PROGRESS_BAR_HOOK
            self.node_id = node_id

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            if value > self.total:
                value = self.total
            self.current = value
            if self.hook is not None:
                self.hook(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.set_progress_bar_global_hook = set_progress_bar_global_hook
    utils.ProgressBar = ProgressBar

    calls: list[tuple] = []

    def hook(value, total, preview_image, prompt_id=None, node_id=None):  # main.py's hook, minus the socket
        mm.throw_exception_if_processing_interrupted()
        calls.append((value, total, preview_image, node_id))

    utils.set_progress_bar_global_hook(hook)
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.utils, comfy.model_management = utils, mm
    return types.SimpleNamespace(comfy=comfy, utils=utils, mm=mm, calls=calls)


@pytest.fixture
def comfy(monkeypatch):
    ns = comfy_standins()
    monkeypatch.setitem(sys.modules, "comfy", ns.comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", ns.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", ns.mm)
    return ns


class Ref:
    def __init__(self, studio):
        self.studio = studio

    def get(self):
        return self.studio


@pytest.fixture
def studio(tmp_path):
    from lora_studio.app import EventHub, standalone_host
    from lora_studio.core.settings import load_settings
    from lora_studio.nodes import bind_studio
    from lora_studio.studio import Studio

    settings = load_settings(cli={"data_dir": tmp_path / "data", "models_dir": tmp_path / "models",
                                  "loras_dir": tmp_path / "loras", "min_approved_images": 2}, env={})
    settings.effective_models_dir.mkdir(parents=True)
    s = Studio(settings, standalone_host(settings, EventHub()))
    s.jobs.start()
    bind_studio(Ref(s))
    project = s.projects.create("Moon")
    char = s.characters.create(project.id, "Aiko", trigger_word="aikotnk", design_prompt="1girl, silver hair")
    add_approved_images(s, char.id, tmp_path, count=2, seed=300)
    assert len(s.images.approved_items(char.id)) == 2
    yield s
    bind_studio(None)
    s.close()


def test_inputs_list_checkpoints_and_diffusers_folders_and_advanced_options(studio, comfy):
    from lora_studio.nodes.training import TrainLoRA

    models = studio.settings.effective_models_dir
    (models / "anime.safetensors").write_bytes(b"x")
    (models / "sd15-folder" / "unet").mkdir(parents=True)
    (models / "sd15-folder" / "unet" / "config.json").write_text("{}")
    inputs = TrainLoRA.INPUT_TYPES()
    assert inputs["required"]["base_model"][0] == ["anime.safetensors", "sd15-folder"]
    assert list(inputs["required"]) == ["character", "base_model", "steps", "rank", "learning_rate"]
    assert inputs["required"]["character"][0] == [AIKO]
    # the saved workflows' inputs keep their names and places; every other training option follows, folded away
    assert list(inputs["optional"])[:5] == ["resolution", "network_alpha", "train_text_encoder", "sample_every",
                                            "torch_compile"]
    assert inputs["optional"]["torch_compile"][1]["default"] is False
    assert inputs["optional"]["network_alpha"][1]["default"] == 0.0  # 0: half the rank
    assert inputs["optional"]["resolution"][1]["default"] == 0  # 0: the model's own size
    assert inputs["optional"]["warmup_steps"][1]["default"] == -1  # -1: 5% of the steps (0 is no warm-up)
    assert inputs["optional"]["lr_scheduler"][0] == ["constant", "constant_with_warmup", "cosine"]
    assert inputs["optional"]["lr_scheduler"][1]["default"] == "cosine"
    assert inputs["optional"]["seed"][1]["control_after_generate"] is False  # no "randomize": one training per seed
    assert list(inputs["optional"])[5] == "force" and inputs["optional"]["force"][1]["default"] is False
    assert not inputs["optional"]["force"][1].get("advanced")
    assert all(spec[1].get("advanced") for name, spec in list(inputs["optional"].items())[6:])
    assert inputs["hidden"] == {"unique_id": "UNIQUE_ID"}
    with pytest.raises(Exception, match="no-such-model"):
        TrainLoRA().run(AIKO, "no-such-model", 2, 4, 1e-4)


def test_node_options_reach_the_training_request(studio, comfy, monkeypatch):
    from lora_studio.core.errors import InvalidInput
    from lora_studio.nodes.training import TrainLoRA
    from lora_studio.training import config

    seen: list = []

    def start(character_id, request, comfy_prompt_id=None):
        seen.append(request)
        raise RuntimeError("stop here")

    monkeypatch.setattr(studio.training, "start", start)
    with pytest.raises(RuntimeError, match="stop here"):
        TrainLoRA().run(AIKO, "anime.safetensors", 20, 8, 2e-4, resolution=768, network_alpha=0.0,
                        train_text_encoder=True, sample_every=5, torch_compile=True, warmup_steps=-1)
    (request,) = seen
    assert request.base_model == "anime.safetensors"
    assert dict(request.options) == {"steps": 20, "rank": 8, "learning_rate": 2e-4, "train_text_encoder": True,
                                     "sample_every": 5, "compile": True, "resolution": 768}
    resolved = config.resolve(request.options, "sd15")  # what the service makes of it: 0 was "half the rank"
    assert (resolved["alpha"], resolved["warmup_steps"]) == (4.0, 1)
    with pytest.raises(RuntimeError, match="stop here"):
        TrainLoRA().run(AIKO, "anime.safetensors", 20, 8, 2e-4, network_alpha=3.0, warmup_steps=0)
    assert (seen[-1].options["alpha"], seen[-1].options["warmup_steps"]) == (3.0, 0)
    with pytest.raises(InvalidInput, match="tag_dropout must be below 1.0"):  # checked like the API checks it
        TrainLoRA().run(AIKO, "anime.safetensors", 20, 8, 2e-4, tag_dropout=1.0)
    assert len(seen) == 2


def test_an_identical_node_returns_the_earlier_lora_without_training(studio, comfy, monkeypatch):
    """Same inputs, same approved set: ComfyUI's cache holds (IS_CHANGED is stable) and, run anyway, the node
    returns the LoRA that training wrote without starting a job (so ComfyUI is not asked to unload its models).
    Other options, `force` or a changed approved set train again."""
    from lora_studio.nodes.train_reuse import approved_set
    from lora_studio.nodes.training import TrainLoRA, request_from_inputs
    from lora_studio.training import config

    started: list = []

    def start(character_id, request, comfy_prompt_id=None):
        started.append(dict(request.options))
        raise RuntimeError("would train")

    monkeypatch.setattr(studio.training, "start", start)
    char = studio.characters.find("moon", "aiko")
    args = (AIKO, "anime.safetensors", 20, 8, 2e-4)
    fingerprint = TrainLoRA.IS_CHANGED(*args)
    assert TrainLoRA.IS_CHANGED(*args, unique_id="9") == fingerprint
    forced = TrainLoRA.IS_CHANGED(*args, force=True)
    assert forced != forced  # NaN: ComfyUI runs a forced node every time
    with pytest.raises(RuntimeError, match="would train"):  # nothing trained yet
        TrainLoRA().run(*args)

    request = request_from_inputs("anime.safetensors", {"steps": 20, "rank": 8, "learning_rate": 2e-4})
    payload = {"character_id": char.id, "base_model": "anime.safetensors", **config.resolve(request.options, "sd15"),
               "base_model_path": "/models/anime.safetensors", "arch": "sd15", "comfy_prompt_id": None}
    job_id = succeeded_training(studio, char.id, payload, {"file_name": "moon-aiko-v1.safetensors",
                                                           "samples": [{"step": 20, "file": "step-20.png"}]})
    approved = approved_set(studio, char.id)
    give_lora(studio, char.id, "moon-aiko-v1.safetensors", job_id=job_id,
              metadata={"lora_studio_dataset_sha256": approved.sha256})
    out = TrainLoRA().run(*args, unique_id="9")
    assert out["result"] == ("moon-aiko-v1.safetensors",) and len(started) == 1
    assert out["ui"]["text"] == [f"moon-aiko-v1.safetensors: trained with these inputs on the same 2 approved images "
                                 f"(job {job_id}); not trained again (turn force on to retrain)"]
    assert out["ui"]["lora_studio_images"] == [{"url": f"/lora-studio/v1/jobs/{job_id}/samples/step-20.png",
                                                "kind": "sample", "job_id": job_id}]
    assert TrainLoRA.IS_CHANGED(*args) == fingerprint
    assert comfy.mm.unloads == []  # ComfyUI's models stay loaded

    for changed in ((AIKO, "anime.safetensors", 21, 8, 2e-4), (AIKO, "other.safetensors", 20, 8, 2e-4)):
        with pytest.raises(RuntimeError, match="would train"):
            TrainLoRA().run(*changed)
        assert TrainLoRA.IS_CHANGED(*changed) != fingerprint
    with pytest.raises(RuntimeError, match="would train"):
        TrainLoRA().run(*args, lr_scheduler="constant")  # an option the earlier training did not have
    with pytest.raises(RuntimeError, match="would train"):
        TrainLoRA().run(*args, force=True)
    image = studio.images.list(char.id, status="approved").items[0]
    studio.images.update(image.id, caption="aikotnk, smiling")  # the approved set changed
    assert TrainLoRA.IS_CHANGED(*args) != fingerprint
    with pytest.raises(RuntimeError, match="would train"):
        TrainLoRA().run(*args)
    assert len(started) == 6


def test_a_training_from_the_node_unloads_comfyuis_models_in_process(studio, comfy, monkeypatch):
    """ComfyUI's /free acts only between prompts: a training started by the node (inside a prompt) on ComfyUI's
    device unloads ComfyUI's models itself, after the job was accepted; a CPU training leaves them."""
    from lora_studio.nodes.training import TrainLoRA

    def echo(ctx):
        return {"file_name": "moon-aiko-v1.safetensors", "samples": []}

    studio.jobs.register("echo", echo)
    monkeypatch.setattr(studio.training, "start", lambda character_id, request, comfy_prompt_id=None:
                        studio.jobs.submit("echo", {"steps": 2}, character_id=character_id))
    studio.host.comfyui_shares_device = True
    out = TrainLoRA().run(AIKO, "anime.safetensors", 2, 4, 1e-4, force=True)
    assert out["ui"]["text"] == ["trained moon-aiko-v1.safetensors"] and "lora_studio_images" not in out["ui"]
    assert comfy.mm.unloads == ["unload_all_models", "soft_empty_cache"]
    TrainLoRA().run(AIKO, "anime.safetensors", 2, 4, 1e-4, force=True, device="cpu")
    studio.host.comfyui_shares_device = False
    TrainLoRA().run(AIKO, "anime.safetensors", 2, 4, 1e-4, force=True)
    assert comfy.mm.unloads == ["unload_all_models", "soft_empty_cache"]


def test_prompt_id_comes_from_the_executing_context(monkeypatch):
    from lora_studio.nodes.training import current_prompt_id

    execution = types.ModuleType("comfy_execution")
    execution.__path__ = []
    utils = types.ModuleType("comfy_execution.utils")
    context = types.SimpleNamespace(prompt_id="p-123", node_id="7", list_index=None)
    utils.get_executing_context = lambda: context
    monkeypatch.setitem(sys.modules, "comfy_execution", execution)
    monkeypatch.setitem(sys.modules, "comfy_execution.utils", utils)
    assert current_prompt_id() == "p-123"
    utils.get_executing_context = lambda: None  # outside a node run: PromptServer's last prompt
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(last_prompt_id="p-456"))
    monkeypatch.setitem(sys.modules, "server", server)
    assert current_prompt_id() == "p-456"


@pytest.mark.training
def test_node_trains_and_relays_steps_and_sample_previews(studio, comfy):
    pytest.importorskip("diffusers")
    from lora_studio.nodes.training import TrainLoRA
    from PIL import Image
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(studio.settings.effective_models_dir / "tiny")
    out = TrainLoRA().run(AIKO, "tiny", 6, 4, 1e-4, resolution=TINY_RESOLUTION, sample_every=3,
                          unique_id="12")
    name = out["result"][0]
    assert name == "moon-aiko-v1.safetensors" and (studio.settings.effective_loras_dir / name).is_file()
    assert out["ui"]["text"] == [f"trained {name}"]
    values = [c[0] for c in comfy.calls]
    assert values == sorted(values) and values[-1] == 6 and all(c[1] == 6 for c in comfy.calls)
    assert all(c[3] == "12" for c in comfy.calls)
    previews = [c[2] for c in comfy.calls if c[2] is not None]
    assert previews, comfy.calls
    kind, image, max_size = previews[-1]
    assert kind == "PNG" and isinstance(image, Image.Image) and max_size == 512
    assert image.size == (TINY_RESOLUTION, TINY_RESOLUTION)
    job = studio.jobs.list(kind="train").items[0]
    assert job.status == "succeeded" and [s["step"] for s in job.result["samples"]] == [3, 6]
    assert out["ui"]["lora_studio_images"][0]["url"] == f"/lora-studio/v1/jobs/{job.id}/samples/" + \
        job.result["samples"][-1]["file"]
    # the same node again (ComfyUI restarted, its cache empty): the LoRA it made, no second job
    again = TrainLoRA().run(AIKO, "tiny", 6, 4, 1e-4, resolution=TINY_RESOLUTION, sample_every=3, unique_id="12")
    assert again["result"] == (name,) and "not trained again" in again["ui"]["text"][0]
    assert len(studio.jobs.list(kind="train").items) == 1


@pytest.mark.training
def test_comfyui_cancel_cancels_the_training_job_and_reraises(studio, comfy):
    pytest.importorskip("diffusers")
    from lora_studio.nodes.training import TrainLoRA
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(studio.settings.effective_models_dir / "tiny")
    outcome: dict = {}

    def run():
        try:
            TrainLoRA().run(AIKO, "tiny", 5000, 4, 1e-4, resolution=TINY_RESOLUTION, sample_every=0)
        except BaseException as e:  # noqa: BLE001 - what ComfyUI would see
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 240
    while not any(c[0] > 0 for c in comfy.calls):  # training steps are moving
        assert thread.is_alive() and time.monotonic() < deadline, (outcome, comfy.calls)
        time.sleep(0.05)
    comfy.mm.interrupt_current_processing(True)  # ComfyUI's Cancel button
    thread.join(120)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), comfy.mm.InterruptProcessingException)
    job = studio.jobs.list(kind="train").items[0]
    assert job.status == "cancelled" and job.cancel_requested
    assert 0 < job.result["progress"]["step"] < 5000
    loras = studio.settings.effective_loras_dir
    assert not loras.exists() or list(loras.iterdir()) == []


def test_train_node_outside_comfyui_runs_without_a_progress_bar(studio, monkeypatch):
    """No comfy modules (the standalone app's tests): follow_job only polls the job."""
    from lora_studio.nodes.training import follow_job

    for name in ("comfy", "comfy.utils", "comfy.model_management"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, like outside ComfyUI

    def echo(ctx):
        ctx.progress(0.5, "half", result={"progress": {"step": 1, "total_steps": 2}, "samples": []})
        return {"file_name": "x.safetensors"}

    studio.jobs.register("echo", echo)
    job = studio.jobs.submit("echo", {"steps": 2})
    assert follow_job(studio, job, poll=0.05).status == "succeeded"


def test_worker_env_keeps_compiled_kernels_in_the_data_folder(studio, monkeypatch):
    """Inductor writes its /tmp default into the environment of any process that used it (ComfyUI's does): the
    worker still gets the studio's own cache folder, and the offline switches."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    env = studio.training.worker_env()
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(studio.training.cache_dir / "torch_compile")
    assert str(studio.training.cache_dir).startswith(str(studio.settings.data_dir))
    assert env["HF_HUB_OFFLINE"] == "1"
    # glibc keeps the freed activations in the heap (no page faults at every step); a user's own setting wins
    assert "glibc.malloc.trim_threshold" in env["GLIBC_TUNABLES"]
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert studio.training.worker_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
