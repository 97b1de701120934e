"""Secrets (database password, API keys, Vault token) never appear in any answer or log line."""

from __future__ import annotations

import logging

from lora_studio.core.settings import load_settings
from support.api import V1, make_character, upload
from support.fake_vault import fake_vault
from support.images import image_bytes

TOKEN = "hvs.leakcheck-token-5150"
PASSWORD = "pw-leak-check-771"
API_KEY = "key-leak-check-8080"


def with_password(url: str | None) -> str | None:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1) if url else None


async def exercise(client) -> str:
    """Hit every kind of route, good and bad; return everything the server answered."""
    seen = []

    async def keep(r):
        seen.append(f"{r.status} {dict(r.headers)} {await r.text()}")
        return r

    p = await (await keep(await client.post(f"{V1}/projects", json={"name": "Leak"}))).json()
    c = await make_character(client, p["id"])
    img = (await upload(client, c["id"], ("a.png", image_bytes(), "image/png")))["created"][0]
    for path in ["/health", "/openapi.json", "/projects", f"/projects/{p['id']}/style", "/characters",
                 f"/characters/{c['id']}/prompt", f"/characters/{c['id']}/images", f"/images/{img['id']}",
                 "/jobs", "/models", "/gallery", "/feedback/categories", "/projects/999", "/images/x"]:
        await keep(await client.get(V1 + path))
    await keep(await client.post(f"{V1}/images/{img['id']}/reject", json={"categories": ["nope"]}))
    await keep(await client.post(f"{V1}/characters/{c['id']}/train", json={"base_model": "none"}))
    await keep(await client.post(f"{V1}/characters/{c['id']}/generate", json={}))
    await keep(await client.post(f"{V1}/projects", data=b"{", headers={"Content-Type": "application/json"}))
    return "\n".join(seen)


async def test_no_secret_in_answers_or_logs(make_client, tmp_path, database_url, caplog):

    vault_data = {"civitai_api_key": API_KEY}
    if database_url:
        vault_data["database_url"] = with_password(database_url)
    env = {"VAULT_ADDR": "", "VAULT_TOKEN": TOKEN, "LORA_STUDIO_VAULT_PATH": "studio", "HOME": str(tmp_path)}
    with caplog.at_level(logging.DEBUG), fake_vault({"secret/studio": vault_data}, TOKEN) as (addr, _):
        env["VAULT_ADDR"] = addr
        settings = load_settings(cli={"data_dir": tmp_path / "data", "min_approved_images": 1}, env=env)
        assert settings.api_keys["civitai_api_key"].get() == API_KEY
        client = await make_client(settings)
        answers = await exercise(client)
    assert "Leak" in answers  # the check saw real answers
    text = answers + caplog.text
    for secret in (PASSWORD, API_KEY, TOKEN):
        assert secret not in text


async def test_startup_failure_does_not_leak_the_database_password(aiohttp_client, tmp_path, caplog):
    from lora_studio.app import create_app

    url = f"postgresql://studio:{PASSWORD}@127.0.0.1:9/studio?connect_timeout=2"
    settings = load_settings(cli={"data_dir": tmp_path, "database_url": url}, env={})
    with caplog.at_level(logging.DEBUG):
        client = await aiohttp_client(create_app(settings))
        r = await client.get(f"{V1}/health")
        body = await r.text()
    assert r.status == 503 and "could not start" in body
    assert PASSWORD not in body and PASSWORD not in caplog.text
