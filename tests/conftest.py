"""Shared fixtures: every integration test runs against SQLite and PostgreSQL.

PostgreSQL: 127.0.0.1:5432, user postgres, trust auth (override with LORA_STUDIO_TEST_PG). Each
test gets its own database, created and dropped here. Without PostgreSQL, run `-m "not postgres"`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PG_ADMIN = os.environ.get("LORA_STUDIO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_database():
    import psycopg
    from psycopg import sql

    name = f"lora_studio_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} ({type(e).__name__}); "
                    "run the SQLite half only with: -m 'not postgres'")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _pg_drop(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skipped test is a failure: every part (PostgreSQL, training, browser) must run."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true: {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    """Browser tests last: Playwright's sync API holds an event loop in the main thread. Under
    pytest-xdist (`-n 2`) each worker takes its tests in this order, so they come last there too."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh, empty database URL (None = the default SQLite file in the data folder)."""
    if request.param == "sqlite":
        yield None
        return
    name, url = _pg_database()
    try:
        yield url
    finally:
        _pg_drop(name)


@pytest.fixture
def make_settings(tmp_path, database_url):
    from lora_studio.core.settings import load_settings

    def make(**overrides):
        values = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "comfyui_output_dir": tmp_path / "comfy_output",
            "models_dir": tmp_path / "models",
            "loras_dir": tmp_path / "loras",
            "min_approved_images": 2,
            "comfyui_url": "http://127.0.0.1:9",  # nothing listens: tests that need ComfyUI start a fake one
            **overrides,
        }
        return load_settings(cli=values, env={})

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
async def make_client(make_settings, aiohttp_client):
    """Start the standalone app on a real aiohttp server and return a client for it. The servers
    stop here, before the test database is dropped (tests must not request aiohttp_client
    themselves for studio apps: its own teardown would come after the drop)."""
    from lora_studio.app import create_app

    clients = []

    async def make(settings=None, **overrides):
        c = await aiohttp_client(create_app(settings or make_settings(**overrides)))
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def client(make_client, settings):
    """A real aiohttp server running the standalone app, and a client for it."""
    return await make_client(settings)


@pytest.fixture
def studio(make_settings):
    """A Studio on the test database without its job runner started: services called directly."""
    from lora_studio.app import EventHub, standalone_host
    from lora_studio.studio import Studio

    settings = make_settings()
    s = Studio(settings, standalone_host(settings, EventHub()))
    yield s
    s.close()
