"""One settings object, merged from (highest precedence first): CLI flags, environment variables,
an optional settings file (JSON or TOML), and HashiCorp Vault (secrets only).

Secrets (database URL with its password, API keys, the Vault token) are held in `Secret`, whose
repr/str never shows the value, so a settings object can be logged or printed safely.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import StudioError

log = logging.getLogger("lora_studio.settings")


class SettingsError(StudioError):
    status = 500
    code = "settings_error"


class Secret:
    """A string that never shows itself in logs, reprs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: Secret | None = None  # None: SQLite file in data_dir
    comfyui_url: str = "http://127.0.0.1:8188"
    host: str = "127.0.0.1"
    port: int = 8401
    loras_dir: Path | None = None  # None: <data_dir>/loras
    datasets_dir: Path | None = None  # None: <data_dir>/datasets
    comfyui_output_dir: Path | None = None  # gallery source; inside ComfyUI its output folder
    models_dir: Path | None = None  # base models for training (standalone); None: <data_dir>/models
    max_upload_mb: int = 50
    min_approved_images: int = 10
    near_duplicate_distance: int = 5  # dHash bits; uploads closer than this to a kept image are skipped
    auto_regenerate: bool = False  # after a rejection, queue a generation with the refined negatives
    regenerate_max_in_flight: int = 2  # per character
    classifier: str = "none"  # none | ollama (a vision model behind an Ollama-compatible API) | embedding (CLIP)
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "llava"
    clip_model_dir: Path | None = None  # local CLIP vision weights for the embedding classifier
    classify_threshold: float = 0.6  # below it an image stays where it is, for a person to sort
    review_reject_below: float = 0.4  # automatic review: min(match, clarity, training value) on 0..1
    review_approve_above: float = 0.92
    max_video_mb: int = 2048  # per uploaded or downloaded video
    video_max_frames: int = 20  # frames kept per video by default
    frame_max_side: int = 768  # frames are scaled so the longer side is at most this
    url_max_duration_s: float = 3 * 3600
    url_extractors: tuple[str, ...] = ()  # yt-dlp extractor keys allowed; () = the built-in default list
    ingest_allowed_hosts: tuple[str, ...] = ()  # "host:port" exceptions to the private-address refusal
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # extra Host names served (DNS-rebinding defence); "*.lan" = any subdomain
    api_keys: Mapping[str, Secret] = field(default_factory=dict)
    vault_addr: str | None = None
    vault_mount: str = "secret"
    vault_path: str | None = None
    job_workers: int = 2

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "lora_studio.sqlite3"

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get()
        return f"sqlite:///{self.sqlite_path}"

    @property
    def effective_loras_dir(self) -> Path:
        return self.loras_dir or self.data_dir / "loras"

    @property
    def effective_datasets_dir(self) -> Path:
        return self.datasets_dir or self.data_dir / "datasets"

    @property
    def effective_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def secret_values(self) -> list[str]:
        """Every secret string held here (for log scrubbing and tests that grep for leaks)."""
        out = [s.get() for s in self.api_keys.values()]
        if self.database_url is not None:
            pw = _password_of(self.database_url.get())
            if pw:
                out.append(pw)
        return [s for s in out if s]


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


# name in settings -> (environment variable, converter)
_ENV: dict[str, tuple[str, Any]] = {
    "data_dir": ("LORA_STUDIO_DATA_DIR", Path),
    "database_url": ("LORA_STUDIO_DATABASE_URL", Secret),
    "comfyui_url": ("COMFYUI_URL", str),
    "host": ("LORA_STUDIO_HOST", str),
    "port": ("LORA_STUDIO_PORT", int),
    "loras_dir": ("LORA_STUDIO_LORAS_DIR", Path),
    "datasets_dir": ("LORA_STUDIO_DATASETS_DIR", Path),
    "comfyui_output_dir": ("LORA_STUDIO_COMFYUI_OUTPUT_DIR", Path),
    "models_dir": ("LORA_STUDIO_MODELS_DIR", Path),
    "max_upload_mb": ("LORA_STUDIO_MAX_UPLOAD_MB", int),
    "min_approved_images": ("LORA_STUDIO_MIN_APPROVED_IMAGES", int),
    "near_duplicate_distance": ("LORA_STUDIO_NEAR_DUPLICATE_DISTANCE", int),
    "max_video_mb": ("LORA_STUDIO_MAX_VIDEO_MB", int),
    "classifier": ("LORA_STUDIO_CLASSIFIER", str),
    "ollama_url": ("LORA_STUDIO_OLLAMA_URL", str),
    "ollama_model": ("LORA_STUDIO_OLLAMA_MODEL", str),
    "clip_model_dir": ("LORA_STUDIO_CLIP_MODEL_DIR", Path),
    "classify_threshold": ("LORA_STUDIO_CLASSIFY_THRESHOLD", float),
    "review_reject_below": ("LORA_STUDIO_REVIEW_REJECT_BELOW", float),
    "review_approve_above": ("LORA_STUDIO_REVIEW_APPROVE_ABOVE", float),
    "auto_regenerate": ("LORA_STUDIO_AUTO_REGENERATE", _bool),
    "regenerate_max_in_flight": ("LORA_STUDIO_REGENERATE_MAX_IN_FLIGHT", int),
    "video_max_frames": ("LORA_STUDIO_VIDEO_MAX_FRAMES", int),
    "frame_max_side": ("LORA_STUDIO_FRAME_MAX_SIDE", int),
    "url_max_duration_s": ("LORA_STUDIO_URL_MAX_DURATION_S", float),
    "url_extractors": ("LORA_STUDIO_URL_EXTRACTORS", _csv),
    "ingest_allowed_hosts": ("LORA_STUDIO_INGEST_ALLOWED_HOSTS", _csv),
    "allowed_origins": ("LORA_STUDIO_ALLOWED_ORIGINS", _csv),
    "allowed_hosts": ("LORA_STUDIO_ALLOWED_HOSTS", _csv),
    "vault_addr": ("VAULT_ADDR", str),
    "vault_mount": ("LORA_STUDIO_VAULT_MOUNT", str),
    "vault_path": ("LORA_STUDIO_VAULT_PATH", str),
    "job_workers": ("LORA_STUDIO_JOB_WORKERS", int),
}
_FIELD_TYPES = {"data_dir": Path, "loras_dir": Path, "datasets_dir": Path, "comfyui_output_dir": Path,
                "models_dir": Path, "clip_model_dir": Path, "database_url": Secret, "allowed_origins": tuple, "url_extractors": tuple,
                "ingest_allowed_hosts": tuple, "allowed_hosts": tuple}


# an allowed_hosts entry: a DNS name, optionally "*." (any subdomain) and ":port" (ignored); not a URL
_HOST_PATTERN = re.compile(r"((\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(:\d*)?")


def _password_of(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs."""
    pw = _password_of(url)
    return url.replace(f":{pw}@", ":***@", 1) if pw else url


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"cannot read settings file {path}: {e.strerror}") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10 has no TOML reader in the standard library
                raise SettingsError(f"settings file {path}: TOML needs Python 3.11 or later; "
                                    "write the settings as JSON (settings.json)") from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        raise SettingsError(f"settings file {path} is not valid: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a table/object")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known - {"api_keys"})
    if unknown:
        raise SettingsError(f"unknown settings in {path}: {', '.join(unknown)}")
    return data


def _convert(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES.get(name)
    if value is None:
        return None
    if kind is Path:
        return Path(value).expanduser()
    if kind is Secret:
        return value if isinstance(value, Secret) else Secret(str(value))
    if kind is tuple:  # a settings file may hold a list or one comma-separated string
        return _csv(value) if isinstance(value, str) else tuple(value)
    return value


def _vault_token(env: Mapping[str, str]) -> str | None:
    if env.get("VAULT_TOKEN"):
        return env["VAULT_TOKEN"]
    token_file = Path(env.get("HOME", str(Path.home()))) / ".vault-token"
    try:
        return token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    settings_file: Path | None = None,
    default_data_dir: Path | None = None,
) -> Settings:
    """Merge the sources; see the module docstring for the order."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    merged: dict[str, Any] = {}

    file_path = settings_file or (Path(env["LORA_STUDIO_SETTINGS"]) if env.get("LORA_STUDIO_SETTINGS") else None)
    file_values = _read_file(file_path) if file_path else {}
    env_values: dict[str, Any] = {}
    for name, (var, conv) in _ENV.items():
        if env.get(var):
            try:
                env_values[name] = conv(env[var])
            except ValueError:
                raise SettingsError(f"environment variable {var} has an invalid value") from None

    merged.update(file_values)
    merged.update(env_values)
    merged.update(cli)

    # Vault has the lowest precedence, but where to find it comes from the other sources.
    vault_addr = merged.get("vault_addr")
    vault_path = merged.get("vault_path")
    if vault_addr and vault_path:
        token = _vault_token(env)
        if token:
            from .vault import read_kv2

            secrets = read_kv2(vault_addr, token, merged.get("vault_mount", "secret"), vault_path)
            api_keys = {k: Secret(str(v)) for k, v in secrets.items() if k.endswith("api_key")}
            api_keys.update({k: Secret(str(v)) for k, v in (merged.get("api_keys") or {}).items()})
            merged["api_keys"] = api_keys
            if "database_url" not in merged and secrets.get("database_url"):
                merged["database_url"] = secrets["database_url"]
        else:
            log.warning("VAULT_ADDR and a Vault path are set but no token was found; Vault not used")

    if "api_keys" in merged:
        merged["api_keys"] = {k: v if isinstance(v, Secret) else Secret(str(v)) for k, v in merged["api_keys"].items()}
    data_dir = merged.pop("data_dir", None) or default_data_dir or Path.cwd() / "lora_studio_data"
    values = {k: _convert(k, v) for k, v in merged.items()}
    try:
        settings = Settings(data_dir=Path(data_dir).expanduser().resolve(), **values)
    except TypeError as e:
        raise SettingsError(f"invalid settings: {e}") from None
    if settings.max_upload_mb <= 0 or settings.job_workers <= 0 or settings.min_approved_images < 1:
        raise SettingsError("max_upload_mb, job_workers and min_approved_images must be positive")
    if settings.classifier not in ("none", "ollama", "embedding"):
        raise SettingsError("classifier must be none, ollama or embedding")
    if not 0 <= settings.review_reject_below <= settings.review_approve_above <= 1 or not 0 <= settings.classify_threshold <= 1:
        raise SettingsError("thresholds must lie in 0..1, with review_reject_below <= review_approve_above")
    if not 0 <= settings.near_duplicate_distance <= 64:
        raise SettingsError("near_duplicate_distance must be between 0 (off) and 64")
    bad_hosts = [h for h in settings.allowed_hosts if not _HOST_PATTERN.fullmatch(h.strip().lower())]
    if bad_hosts:
        raise SettingsError(f"allowed_hosts takes host names (e.g. studio.lan or *.studio.lan, a port is ignored), "
                            f"not {bad_hosts[0][:100]!r}")
    return settings


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **{k: _convert(k, v) for k, v in changes.items()})
