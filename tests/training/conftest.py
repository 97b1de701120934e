"""Fixtures for the training tests."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process torch work here is tiny; one thread avoids OpenMP spin-waiting on a busy machine."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
