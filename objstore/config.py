"""Build a storage from a configuration mapping (as read from YAML, JSON or TOML)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .posix import PosixStorage
from .s3 import S3Storage
from .storage import Storage

_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    # type: (required fields, optional fields)
    "posix": ({"path"}, set()),
    "s3": ({"endpoint", "bucket"}, {"location", "access_key", "secret_key", "session_token", "part_size"}),
}


def from_config(config: Mapping[str, Any]) -> Storage:
    """Return the storage that ``config`` describes.

    ``{"type": "posix", "path": "/srv/store"}`` or ``{"type": "s3", "endpoint":
    "https://host:port", "bucket": "name", "location": "us-east-1", "access_key": ...,
    "secret_key": ...}``; S3 credentials missing from the mapping are read from
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``, the
    location from ``AWS_REGION`` or ``AWS_DEFAULT_REGION``.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a storage configuration is a mapping, not {type(config).__name__}")
    kind = config.get("type")
    if kind == "posixflat":
        raise ConfigError(
            "storage type 'posixflat' is internal and cannot be configured; use 'posix' or 's3'"
        )
    if kind not in _FIELDS:
        raise ConfigError(f"storage type is one of {sorted(_FIELDS)}, not {kind!r}")
    required, optional = _FIELDS[kind]
    missing = sorted(required - config.keys())
    if missing:
        raise ConfigError(f"{kind} storage configuration misses field(s): {', '.join(missing)}")
    unknown = sorted(config.keys() - required - optional - {"type"})
    if unknown:
        raise ConfigError(
            f"{kind} storage configuration has unknown field(s): {', '.join(map(str, unknown))}"
        )
    for name, value in config.items():
        if name != "part_size" and not isinstance(value, str):
            raise ConfigError(f"field {name!r} is a string, not {type(value).__name__}")
    if kind == "posix":
        if not config["path"]:
            raise ConfigError("field 'path' is empty")
        return PosixStorage(config["path"])
    return _s3_from_config(config)


def _s3_from_config(config: Mapping[str, Any]) -> S3Storage:
    url = urlsplit(config["endpoint"])
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") or url.query:
        raise ConfigError(f"field 'endpoint' is a URL like https://host:port, not {config['endpoint']!r}")
    try:
        url.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigError(f"field 'endpoint' has an invalid port: {config['endpoint']!r}") from exc
    access_key = config.get("access_key", os.environ.get("AWS_ACCESS_KEY_ID"))
    secret_key = config.get("secret_key", os.environ.get("AWS_SECRET_ACCESS_KEY"))
    if (access_key is None) != (secret_key is None):
        raise ConfigError(
            "S3 credentials need both access_key and secret_key (or neither, for anonymous access)"
        )
    part_size = config.get("part_size")
    if part_size is not None and (not isinstance(part_size, int) or isinstance(part_size, bool)):
        raise ConfigError(f"field 'part_size' is an int, not {part_size!r}")
    try:
        return S3Storage(
            url.netloc,
            config["bucket"],
            access_key=access_key,
            secret_key=secret_key,
            session_token=config.get("session_token", os.environ.get("AWS_SESSION_TOKEN")),
            secure=url.scheme == "https",
            region=config.get("location")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION"),
            **({"part_size": part_size} if part_size is not None else {}),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
