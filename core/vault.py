"""Read secrets from HashiCorp Vault's KV version 2 engine with hvac (imported only when used)."""

from __future__ import annotations

import logging

from .errors import StudioError

log = logging.getLogger("lora_studio.vault")


class VaultError(StudioError):
    status = 500
    code = "vault_error"


def read_kv2(addr: str, token: str, mount: str, path: str, timeout: float = 10.0) -> dict:
    """Return the latest version's key/value data at `mount`/`path`.

    Error messages name the address and path but never the token or any secret value.
    """
    try:
        import hvac
        import hvac.exceptions
        import requests
    except ImportError:
        raise VaultError("Vault is configured but the 'hvac' package is not installed (pip install hvac)") from None
    client = hvac.Client(url=addr, token=token, timeout=timeout)
    try:
        answer = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    except hvac.exceptions.Forbidden:
        raise VaultError(f"Vault at {addr} refused the token for {mount}/{path}") from None
    except hvac.exceptions.InvalidPath:
        raise VaultError(f"Vault at {addr} has no secret at {mount}/{path}") from None
    except hvac.exceptions.VaultError as e:
        raise VaultError(f"Vault at {addr} failed to read {mount}/{path}: {type(e).__name__}") from None
    except requests.RequestException as e:
        raise VaultError(f"Vault at {addr} is unreachable: {type(e).__name__}") from None
    data = (answer or {}).get("data", {}).get("data")
    if not isinstance(data, dict):
        raise VaultError(f"Vault secret {mount}/{path} is not a key/value map")
    log.info("read %d secret value(s) from Vault %s/%s", len(data), mount, path)
    return data
