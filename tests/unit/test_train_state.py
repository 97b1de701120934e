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


def test_the_loss_history_is_kept_for_the_chart_and_thinned_as_it_grows(tmp_path: Path) -> None:
    from lora_studio.training.worker_client import LOSS_POINTS, TrainState

    state = TrainState(total_steps=2000, work=tmp_path)
    for step in range(1, 1001):
        state.apply({"event": "progress", "step": step, "loss": 1.0 / step, "smooth_loss": 2.0 / step})
    state.apply({"event": "progress", "step": 1000, "loss": 9.0})  # a repeated step adds nothing
    history = state.snapshot()["loss_history"]
    assert len(history) <= LOSS_POINTS and history[-1] == [1000, 0.002]  # the smoothed loss, the newest kept
    assert history[0][0] <= 8 and all(a[0] < b[0] for a, b in zip(history, history[1:], strict=False))
