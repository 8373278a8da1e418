"""Build a storage from a URL, or from a configuration mapping (as read from YAML, JSON or TOML)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import attrs

from .errors import ConfigError, InvalidArgumentError
from .keys import check_key, check_posix_key
from .memory import MemoryStorage
from .posix import PosixStorage
from .prefixed import PrefixedStorage, normalise_prefix
from .s3 import MIN_PART_SIZE, S3Storage
from .s3.environment import endpoint_url, region_name, resolve_s3
from .storage import Storage

#: The URL schemes of :func:`from_url`, and the storage type each builds.
SCHEMES = {"s3": "s3", "file": "posix", "memory": "memory"}
URL_FORMS = "s3://bucket[/prefix], file:///path or memory://"
_CREDENTIALS = frozenset({"access_key", "secret_key", "session_token"})
#: The S3 options that go to :class:`S3Storage` as they are.
_TUNING = ("part_size", "retries", "backoff", "timeout", "max_concurrency")
_S3_OPTIONS = frozenset({"endpoint", "region", "profile", "prefix", *_TUNING} | _CREDENTIALS)
#: The options of :func:`from_url`, by storage type (the URL gives the path or bucket).
URL_OPTIONS: dict[str, frozenset[str]] = {
    "posix": frozenset({"prefix"}),
    "s3": _S3_OPTIONS,
    "memory": frozenset({"prefix"}),
}
#: The fields of :func:`from_config`, by storage type: (required, optional).
CONFIG_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "posix": (frozenset({"path"}), frozenset({"prefix"})),
    "s3": (frozenset({"endpoint", "bucket"}), _S3_OPTIONS - {"endpoint"} | {"location"}),
    "memory": (frozenset(), frozenset({"prefix"})),
}


def from_url(url: str, **options: object) -> Storage:
    """Return the storage that ``url`` names, with ``options``.

    ``s3://bucket[/prefix]``, ``file:///path`` (a posix store) or ``memory://``; options
    may also follow the URL as ``?name=value&...`` (credentials excepted). S3 settings
    that are not given come from the AWS environment (see :mod:`objstore.s3.environment`).
    A prefix gives a :class:`PrefixedStorage`. Anything unknown or invalid raises
    :class:`ConfigError` naming it.
    """
    return _from_url(url, options, "option")


def from_config(config: Mapping[str, Any]) -> Storage:
    """Return the storage that ``config`` describes.

    ``{"type": "posix", "path": "/srv/store"}``, ``{"type": "s3", "endpoint":
    "https://host:port", "bucket": "name", ...}`` (``location`` is another name of
    ``region``), ``{"type": "memory"}``, or ``{"url": "s3://bucket/prefix", ...}`` with the
    options of :func:`from_url`. Every type takes a ``prefix``; S3 settings that are not
    given come from the AWS environment, except the endpoint, which ``type: s3`` requires.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a storage configuration is a mapping, not {type(config).__name__}")
    if "url" in config:
        if "type" in config:
            raise ConfigError("a storage configuration has a 'type' or a 'url', not both")
        return _from_url(
            config["url"], {name: value for name, value in config.items() if name != "url"}, "field"
        )
    kind = config.get("type")
    if kind == "posixflat":
        raise ConfigError(
            "storage type 'posixflat' is internal and cannot be configured; use 'posix' or 's3'"
        )
    if kind not in CONFIG_FIELDS:
        raise ConfigError(f"storage type is one of {sorted(CONFIG_FIELDS)}, not {kind!r}")
    required, optional = CONFIG_FIELDS[kind]
    missing = sorted(required - config.keys())
    if missing:
        raise ConfigError(f"{kind} storage configuration misses field(s): {', '.join(missing)}")
    fields = {name: value for name, value in config.items() if name != "type"}
    _refuse_unknown(kind, fields.keys(), required | optional, "field")
    return _build(kind, fields, "field")


# -- URLs ----------------------------------------------------------------------------


def _from_url(url: object, options: Mapping[str, object], noun: str) -> Storage:
    if not isinstance(url, str):
        raise ConfigError(f"a storage URL is a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"storage URL {_shown(url)!r} is malformed: {exc}") from exc
    if parts.scheme not in SCHEMES:
        hint = f"unknown scheme {parts.scheme!r}" if parts.scheme else "a folder is file:///absolute/path"
        raise ConfigError(f"a storage URL is {URL_FORMS}, not {_shown(url)!r} ({hint})")
    if "@" in parts.netloc:
        raise ConfigError(
            f"a storage URL holds no user name or password ({_shown(url)!r}); give access_key and "
            "secret_key as options, or through the environment"
        )
    if parts.fragment or url.endswith("#"):
        raise ConfigError(f"a storage URL has no #fragment: {_shown(url)!r}")
    query = _query(parts, url)
    twice = sorted(query.keys() & options.keys())
    if twice:
        raise ConfigError(f"{noun}(s) given both in the URL and as {noun}s: {', '.join(twice)}")
    kind = SCHEMES[parts.scheme]
    fields: dict[str, object] = _url_fields(
        kind, parts, url, has_prefix="prefix" in query or "prefix" in options
    )
    allowed = URL_OPTIONS[kind] | ({"location"} if kind == "s3" and noun == "field" else set())
    _refuse_unknown(kind, query.keys() | options.keys(), allowed, noun)
    fields.update({name: OPTIONS[name].parse(text) for name, text in query.items()})
    fields.update(options)
    return _build(kind, fields, noun)


def _url_fields(kind: str, parts: SplitResult, url: str, *, has_prefix: bool) -> dict[str, object]:
    """What the URL itself says: the bucket and prefix (s3), the path (posix)."""
    if kind == "s3":
        if not parts.netloc:
            raise ConfigError(f"an s3 URL names a bucket, s3://bucket[/prefix], not {_shown(url)!r}")
        fields: dict[str, object] = {"bucket": parts.netloc}
        prefix = parts.path[1:]  # as written, as the AWS CLI takes it (no %-decoding)
        if prefix:
            if has_prefix:
                raise ConfigError(
                    f"the prefix is given twice: {_shown(url)!r} has one, and so do the options"
                )
            fields["prefix"] = prefix
        return fields
    if kind == "posix":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"a file URL is file:///absolute/path; {parts.netloc!r} is not this host, in {_shown(url)!r}"
            )
        if not parts.path.startswith("/"):
            raise ConfigError(f"a file URL has an absolute path, file:///path, not {_shown(url)!r}")
        return {"path": unquote(parts.path, errors="strict")}
    if parts.netloc or parts.path:
        raise ConfigError(f"a memory URL is memory:// (options may follow, ?prefix=...), not {_shown(url)!r}")
    return {}


def _query(parts: SplitResult, url: str) -> dict[str, str]:
    """The options in the URL's query; each once, and no credentials."""
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True) if parts.query else []
    except ValueError as exc:
        raise ConfigError(f"the query of storage URL {_shown(url)!r} is not name=value&...: {exc}") from exc
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in _CREDENTIALS:  # not echoed
            raise ConfigError(
                f"credentials ({name}) do not go in a URL, which ends up in logs; give them as "
                "options, or through the environment"
            )
        if name in query:
            raise ConfigError(f"option {name!r} is given twice in the URL {_shown(url)!r}")
        query[name] = value
    return query


def _shown(url: str) -> str:
    """``url`` without its secrets: user info, and credentials in the query."""
    url = re.sub(r"//[^/?#]*@", "//***@", url)
    return re.sub(r"([?&](?:access_key|secret_key|session_token)=)[^&#]*", r"\1***", url)


# -- options --------------------------------------------------------------------------


def _text(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{label} is a string, not {type(value).__name__}")
    if not value:
        raise ConfigError(f"{label} is empty")
    return value


def _path(value: object, label: str) -> str:
    path = _text(value, label)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ConfigError(f"{label} is a folder path, not a URL ({path!r}); from_url takes URLs")
    if "\0" in path:
        raise ConfigError(f"{label} has a NUL character: {path!r}")
    return path


def _bucket(value: object, label: str) -> str:
    bucket = _text(value, label)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", bucket):
        raise ConfigError(f"{label} is a bucket name (letters, digits, '.', '-', '_'), not {bucket!r}")
    return bucket


def _endpoint(value: object, label: str) -> str:
    return endpoint_url(_text(value, label), label)


def _region(value: object, label: str) -> str:
    return region_name(_text(value, label), label)


def _int_at_least(least: int) -> Callable[[object, str], int]:
    def check(value: object, label: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{label} is an int of at least {least}, not {value!r}")
        return value

    return check


def _seconds(*, zero: bool) -> Callable[[object, str], float]:
    def check(value: object, label: str) -> float:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not (value >= 0 if zero else value > 0)
        ):
            least = "0 or more" if zero else "over 0"
            raise ConfigError(f"{label} is a number of seconds, {least}, not {value!r}")
        return value

    return check


def _parse_int(text: str) -> object:
    return int(text) if re.fullmatch(r"[0-9]+", text) else text  # the check refuses text, naming it


def _parse_float(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text  # the check refuses it, naming it


def _parse_text(text: str) -> object:
    return text


@attrs.frozen
class Option:
    """How an option is checked, and read from the text of a URL's query."""

    check: Callable[[object, str], object]
    parse: Callable[[str], object] = _parse_text


#: Every option and field, by name.
OPTIONS: dict[str, Option] = {
    "path": Option(_path),
    "bucket": Option(_bucket),
    "prefix": Option(_text),
    "endpoint": Option(_endpoint),
    "region": Option(_region),
    "location": Option(_region),
    "profile": Option(_text),
    "access_key": Option(_text),
    "secret_key": Option(_text),
    "session_token": Option(_text),
    "retries": Option(_int_at_least(0), _parse_int),
    "part_size": Option(_int_at_least(MIN_PART_SIZE), _parse_int),
    "max_concurrency": Option(_int_at_least(1), _parse_int),
    "timeout": Option(_seconds(zero=False), _parse_float),
    "backoff": Option(_seconds(zero=True), _parse_float),
}


def _refuse_unknown(kind: str, names: Any, known: frozenset[str] | set[str], noun: str) -> None:
    unknown = sorted(map(str, set(names) - set(known)))
    if unknown:
        raise ConfigError(
            f"{kind} storage configuration has unknown {noun}(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


# -- building ---------------------------------------------------------------------------


def _build(kind: str, fields: Mapping[str, object], noun: str) -> Storage:
    """The store of ``kind`` that the (known) ``fields`` describe, prefixed if they say so."""
    checked = {name: OPTIONS[name].check(value, f"{noun} {name!r}") for name, value in fields.items()}
    prefix = checked.pop("prefix", None)
    store: Storage
    if kind == "posix":
        prefix = _prefix(prefix, check_posix_key, noun)  # before the folder is made
        store = PosixStorage(str(checked["path"]))
    elif kind == "memory":
        prefix = _prefix(prefix, check_key, noun)
        store = MemoryStorage()
    else:
        s3 = _s3(checked)
        prefix = _prefix(prefix, s3.check_key, noun)
        store = s3
    return store if prefix is None else PrefixedStorage(store, prefix)


def _prefix(prefix: object, check: Callable[[object], str], noun: str) -> str | None:
    if prefix is None:
        return None
    try:
        return normalise_prefix(prefix, check)
    except InvalidArgumentError as exc:
        raise ConfigError(f"{noun} 'prefix': {exc}") from exc


def _s3(checked: Mapping[str, object]) -> S3Storage:
    if "region" in checked and "location" in checked:
        raise ConfigError("fields 'region' and 'location' name the same setting: give one of them")
    connection = resolve_s3(
        endpoint=_given(checked, "endpoint"),
        region=_given(checked, "region") or _given(checked, "location"),
        access_key=_given(checked, "access_key"),
        secret_key=_given(checked, "secret_key"),
        session_token=_given(checked, "session_token"),
        profile=_given(checked, "profile"),
    )
    tuning: dict[str, Any] = {name: checked[name] for name in _TUNING if name in checked}
    try:
        return S3Storage(
            connection.endpoint,
            str(checked["bucket"]),
            access_key=connection.access_key,
            secret_key=connection.secret_key,
            session_token=connection.session_token,
            region=connection.region,
            **tuning,
        )
    except InvalidArgumentError as exc:
        raise ConfigError(str(exc)) from exc


def _given(checked: Mapping[str, object], name: str) -> str | None:
    """The checked value of the text option ``name``, or None."""
    value = checked.get(name)
    if value is not None and not isinstance(value, str):
        raise AssertionError(f"option {name!r} was checked as text, and is {value!r}")
    return value
