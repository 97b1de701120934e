"""The job's view of a training worker's events (training/worker_client.py TrainState): phases, warnings, speed."""

from __future__ import annotations

from pathlib import Path

from lora_studio.training.worker_client import TrainState


def test_compiling_phase_then_speed_from_the_next_step(tmp_path: Path) -> None:
    state = TrainState(total_steps=10, work=tmp_path)
    state.apply({"event": "start", "total_steps": 10, "arch": "sd15", "resume_step": 0})
    assert state.apply({"event": "phase", "name": "compiling", "done": 0, "total": 1})  # reaches the job at once
    assert state.message() == "compiling the UNet (torch.compile) 0/1"
    state.apply({"event": "phase", "name": "compiling", "done": 1, "total": 1})
    state.apply({"event": "progress", "step": 1, "total_steps": 10, "loss": 0.5, "smooth_loss": 0.5, "lr": 1e-4})
    assert state.phase == {"name": "training"}
    assert "it/s" not in state.message() and "ETA" not in state.message()  # the compile step has no speed
    state.apply({"event": "progress", "step": 2, "total_steps": 10, "loss": 0.4, "smooth_loss": 0.45, "lr": 1e-4,
                 "it_s": 2.0, "eta_s": 4.0})
    assert "2.00 it/s" in state.message() and "ETA" in state.message()


def test_warnings_are_kept_once_on_the_job(tmp_path: Path) -> None:
    state = TrainState(total_steps=4, work=tmp_path)
    message = "torch.compile failed, training without it: RuntimeError: no working C++ compiler"
    assert state.apply({"event": "warning", "message": message})
    state.apply({"event": "warning", "message": message})
    state.apply({"event": "warning", "message": ""})
    assert state.snapshot()["warnings"] == [message]
    for i in range(40):
        state.apply({"event": "warning", "message": f"w{i}"})
    assert len(state.snapshot()["warnings"]) == 20  # bounded
