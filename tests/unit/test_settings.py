"""Settings precedence (CLI > environment > file > Vault) and Vault KV v2 through hvac, against a
local server that speaks Vault's HTTP API."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from lora_studio.core.settings import Secret, SettingsError, load_settings
from lora_studio.core.vault import VaultError
from support.fake_vault import fake_vault

TOKEN = "hvs.test-token-123456"
DB_FROM_VAULT = "postgresql://studio:vault-pw-998877@db.internal:5432/studio"


def vault_env(addr, tmp_path, **extra):
    return {"VAULT_ADDR": addr, "VAULT_TOKEN": TOKEN, "LORA_STUDIO_VAULT_PATH": "lora-studio",
            "HOME": str(tmp_path), **extra}


def test_defaults_need_nothing(tmp_path):
    s = load_settings(env={}, default_data_dir=tmp_path)
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'lora_studio.sqlite3'}"
    assert s.effective_loras_dir == tmp_path / "loras"
    assert (s.host, s.port, s.comfyui_url) == ("127.0.0.1", 8401, "http://127.0.0.1:8188")


def test_precedence_cli_env_file(tmp_path):
    f = tmp_path / "settings.json"
    f.write_text(json.dumps({"port": 9001, "comfyui_url": "http://file:1", "max_upload_mb": 7}))
    env = {"LORA_STUDIO_PORT": "9002", "COMFYUI_URL": "http://env:2", "LORA_STUDIO_SETTINGS": str(f)}
    s = load_settings(cli={"port": 9003}, env=env, default_data_dir=tmp_path)
    assert (s.port, s.comfyui_url, s.max_upload_mb) == (9003, "http://env:2", 7)
    toml = tmp_path / "s.toml"
    toml.write_text('port = 9004\nallowed_origins = ["http://a:1"]\n')
    s = load_settings(env={}, settings_file=toml, default_data_dir=tmp_path)
    assert (s.port, s.allowed_origins) == (9004, ("http://a:1",))


def test_bad_settings_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prot": 1}))
    with pytest.raises(SettingsError, match="unknown settings.*prot"):
        load_settings(env={}, settings_file=bad)
    with pytest.raises(SettingsError, match="LORA_STUDIO_PORT"):
        load_settings(env={"LORA_STUDIO_PORT": "eighty"})


def test_vault_supplies_database_url_and_api_keys(tmp_path):
    secrets = {"secret/lora-studio": {"database_url": DB_FROM_VAULT, "civitai_api_key": "civ-key-424242"}}
    with fake_vault(secrets, TOKEN) as (addr, seen):
        s = load_settings(env=vault_env(addr, tmp_path), default_data_dir=tmp_path)
    assert s.effective_database_url == DB_FROM_VAULT
    assert s.api_keys["civitai_api_key"].get() == "civ-key-424242"
    assert seen[0]["X-Vault-Token"] == TOKEN
    # a database URL from the environment outranks Vault's
    with fake_vault(secrets, TOKEN) as (addr, _):
        s = load_settings(env=vault_env(addr, tmp_path, LORA_STUDIO_DATABASE_URL="sqlite:///x.db"))
    assert s.effective_database_url == "sqlite:///x.db"
    assert s.api_keys["civitai_api_key"].get() == "civ-key-424242"


def test_vault_token_from_home_file(tmp_path):
    (tmp_path / ".vault-token").write_text(TOKEN + "\n")
    with fake_vault({"kv/team/studio": {"database_url": DB_FROM_VAULT}}, TOKEN) as (addr, _):
        env = {"VAULT_ADDR": addr, "LORA_STUDIO_VAULT_PATH": "team/studio", "LORA_STUDIO_VAULT_MOUNT": "kv",
               "HOME": str(tmp_path)}
        s = load_settings(env=env, default_data_dir=tmp_path)
    assert s.effective_database_url == DB_FROM_VAULT


def test_vault_errors_never_show_the_token(tmp_path):
    with fake_vault({"secret/lora-studio": {"database_url": DB_FROM_VAULT}}, "another-token") as (addr, _):
        with pytest.raises(VaultError) as refused:
            load_settings(env=vault_env(addr, tmp_path))
    with fake_vault({"secret/lora-studio": {"database_url": DB_FROM_VAULT}}, TOKEN) as (addr, _):
        with pytest.raises(VaultError) as missing:
            load_settings(env=vault_env(addr, tmp_path, LORA_STUDIO_VAULT_PATH="nope"))
    assert "refused" in str(refused.value) and TOKEN not in str(refused.value)
    assert "no secret" in str(missing.value)
    with pytest.raises(VaultError, match="unreachable"):
        load_settings(env=vault_env("http://127.0.0.1:9", tmp_path))


def test_secrets_hide_in_reprs_and_logs(tmp_path, caplog):
    secrets = {"secret/lora-studio": {"database_url": DB_FROM_VAULT, "openai_api_key": "sk-very-secret-1"}}
    with caplog.at_level(logging.DEBUG), fake_vault(secrets, TOKEN) as (addr, _):
        s = load_settings(env=vault_env(addr, tmp_path), default_data_dir=tmp_path)
    text = repr(s) + str(s) + caplog.text
    for secret in ("vault-pw-998877", "sk-very-secret-1", TOKEN):
        assert secret not in text
    assert repr(Secret("abc")) == "Secret('***')"
    assert set(s.secret_values()) == {"vault-pw-998877", "sk-very-secret-1"}


def test_a_toml_file_without_a_toml_reader_is_a_settings_error(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the user gets a settings error that says what to do, not a traceback."""
    path = tmp_path / "settings.toml"
    path.write_text('job_workers = 2\n', encoding="utf-8")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib now raises ModuleNotFoundError
    with pytest.raises(SettingsError, match="TOML needs Python 3.11 or later"):
        load_settings(env={}, settings_file=path, default_data_dir=tmp_path)
