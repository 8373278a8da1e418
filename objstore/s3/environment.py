"""S3 settings not given explicitly, from where AWS tools look: variables, then shared files.

The order, for each setting on its own (explicit arguments always win):

- endpoint: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, else AWS itself,
  ``https://s3.<region>.amazonaws.com``;
- credentials: ``AWS_ACCESS_KEY_ID`` with ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_SESSION_TOKEN``), else the profile's keys in the shared credentials file, then in
  the config file, else none (anonymous requests);
- region: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, else the profile's ``region`` in the
  config file (``us-east-1`` for AWS's own endpoint when none is found).

The profile is the ``profile`` argument, else ``AWS_PROFILE``, else ``default``; the files
are ``AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``) and ``AWS_CONFIG_FILE``
(``~/.aws/config``, where a profile's section is ``[profile name]``). An empty variable
counts as unset.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from ..errors import ConfigError, InvalidArgumentError
from .storage import REGION_NAME, parse_endpoint

#: The region of AWS's own endpoint when no region is configured anywhere.
DEFAULT_AWS_REGION = "us-east-1"
#: Profile settings that get credentials in ways objstore does not follow.
UNSUPPORTED_CREDENTIAL_SETTINGS = (
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
)


@attrs.frozen
class S3Connection:
    """Where and as whom to reach S3: what the arguments and the environment resolved to.

    ``endpoint`` is a URL with its scheme; no credentials means anonymous requests. The
    ``*_source`` fields say where each setting came from.
    """

    endpoint: str
    region: str | None
    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    endpoint_source: str = "argument"
    region_source: str = "argument"
    credentials_source: str = "arguments"


def resolve_s3(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> S3Connection:
    """The connection settings: the given ones, the rest from the environment (``os.environ``
    unless ``environ`` is given) and the shared AWS files of the profile.

    A bad value raises :class:`ConfigError` naming where it came from.
    """
    env = {name: value for name, value in (os.environ if environ is None else environ).items() if value}
    files = SharedFiles.of(env, profile)
    found_region, region_source = _region(region, env, files)
    found_endpoint, endpoint_source = _endpoint(endpoint, env, found_region)
    if found_region is None and endpoint_source == "AWS":
        found_region, region_source = DEFAULT_AWS_REGION, "AWS's default"
    credentials = _credentials(access_key, secret_key, session_token, env, files)
    return S3Connection(
        endpoint=found_endpoint,
        region=found_region,
        access_key=credentials[0],
        secret_key=credentials[1],
        session_token=credentials[2],
        endpoint_source=endpoint_source,
        region_source=region_source,
        credentials_source=credentials[3],
    )


def endpoint_url(value: object, source: str) -> str:
    """``value`` as ``scheme://host[:port]`` if it is an http or https URL of an S3 endpoint;
    else :class:`ConfigError` naming ``source``."""
    try:
        netloc, secure = parse_endpoint(value)
    except InvalidArgumentError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if secure is None:
        raise ConfigError(f"{source} is a URL like https://host:port (the scheme decides TLS), not {value!r}")
    return f"{'https' if secure else 'http'}://{netloc}"


def region_name(value: object, source: str) -> str:
    """``value`` if it is a region name, else :class:`ConfigError` naming ``source``."""
    if not isinstance(value, str) or not REGION_NAME.fullmatch(value):
        raise ConfigError(f"{source} is a region name such as 'us-east-1', not {value!r}")
    return value


def aws_endpoint(region: str) -> str:
    """The URL of AWS's S3 endpoint in ``region``."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{domain}"


def _endpoint(endpoint: str | None, env: Mapping[str, str], region: str | None) -> tuple[str, str]:
    if endpoint is not None:
        return endpoint_url(endpoint, "endpoint"), "argument"
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if name in env:
            return endpoint_url(env[name], name), name
    return aws_endpoint(region or DEFAULT_AWS_REGION), "AWS"


def _region(region: str | None, env: Mapping[str, str], files: SharedFiles) -> tuple[str | None, str]:
    if region is not None:
        return region_name(region, "region"), "argument"
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if name in env:
            return region_name(env[name], name), name
    found = files.setting("region")
    if found is None:
        return None, "none"
    value, source = found
    return region_name(value, source), source


def _credentials(
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    env: Mapping[str, str],
    files: SharedFiles,
) -> tuple[str | None, str | None, str | None, str]:
    if access_key is not None or secret_key is not None or session_token is not None:
        if access_key is None or secret_key is None:
            raise ConfigError(
                "S3 credentials need both access_key and secret_key (or neither, for the environment's)"
            )
        return access_key, secret_key, session_token, "arguments"
    env_key, env_secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if env_key is not None or env_secret is not None:
        if env_key is None or env_secret is None:
            missing = "AWS_ACCESS_KEY_ID" if env_key is None else "AWS_SECRET_ACCESS_KEY"
            raise ConfigError(f"the environment has half of the AWS credentials: {missing} is not set")
        return env_key, env_secret, env.get("AWS_SESSION_TOKEN"), "environment"
    return files.credentials() or (None, None, None, "none (anonymous)")


@attrs.frozen
class SharedFiles:
    """The shared credentials and config files of one profile, read when first needed."""

    profile: str
    #: Where the profile's name came from: "argument", "AWS_PROFILE", or None (the default one).
    named_by: str | None
    credentials_path: str
    config_path: str

    @classmethod
    def of(cls, env: Mapping[str, str], profile: str | None) -> SharedFiles:
        """The files and profile that ``env`` (with empty variables left out) and ``profile`` name."""
        if profile is not None:
            if not isinstance(profile, str) or not profile:
                raise ConfigError(f"profile is the name of an AWS profile, not {profile!r}")
            name, named_by = profile, "argument"
        elif "AWS_PROFILE" in env:
            name, named_by = env["AWS_PROFILE"], "AWS_PROFILE"
        else:
            name, named_by = "default", None
        home = env.get("HOME") or env.get("USERPROFILE") or str(Path.home())
        return cls(
            profile=name,
            named_by=named_by,
            credentials_path=os.path.expanduser(
                env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
            ),
            config_path=os.path.expanduser(
                env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")
            ),
        )

    def credentials(self) -> tuple[str, str, str | None, str] | None:
        """(access key, secret key, session token, source) of the profile, if it has keys."""
        for path, section in self._sections():
            where = f"profile {self.profile!r} in {path}"
            access_key, secret_key = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
            if access_key and secret_key:
                return access_key, secret_key, section.get("aws_session_token") or None, where
            if access_key or secret_key:
                missing = "aws_secret_access_key" if access_key else "aws_access_key_id"
                raise ConfigError(f"{where} has half of the AWS credentials: {missing} is missing")
            unsupported = [name for name in UNSUPPORTED_CREDENTIAL_SETTINGS if name in section]
            if unsupported:
                raise ConfigError(
                    f"{where} gets its credentials through {', '.join(unsupported)}, which objstore does "
                    "not follow; give access_key and secret_key, or set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (aws configure export-credentials prints them)"
                )
        return None

    def setting(self, name: str) -> tuple[str, str] | None:
        """(value, source) of the setting ``name`` of the profile in the config file."""
        for path, section in self._sections():
            if path == self.config_path and section.get(name):
                return section[name], f"{name} of profile {self.profile!r} in {path}"
        return None

    def _sections(self) -> list[tuple[str, Mapping[str, str]]]:
        """(path, section) of the profile in the credentials file, then in the config file.

        A profile named by the argument or ``AWS_PROFILE`` must be in one of them.
        """
        sections = _profile_sections(self.credentials_path, self.config_path, self.profile)
        if not sections and self.named_by is not None:
            raise ConfigError(
                f"AWS profile {self.profile!r} (from {self.named_by}) is in neither "
                f"{self.credentials_path} nor {self.config_path}"
            )
        return sections


def _profile_sections(
    credentials_path: str, config_path: str, profile: str
) -> list[tuple[str, Mapping[str, str]]]:
    sections: list[tuple[str, Mapping[str, str]]] = []
    credentials = _read_ini(credentials_path)
    if credentials is not None and credentials.has_section(profile):
        sections.append((credentials_path, dict(credentials.items(profile))))
    config = _read_ini(config_path)
    if config is not None:
        names = ["default", "profile default"] if profile == "default" else [f"profile {profile}"]
        for name in names:
            if config.has_section(name):
                sections.append((config_path, dict(config.items(name))))
                break
    return sections


def _read_ini(path: str) -> configparser.RawConfigParser | None:
    """The parsed file, None if it does not exist; :class:`ConfigError` if it cannot be read."""
    parser = configparser.RawConfigParser(default_section="\0")  # no [DEFAULT] merged into profiles
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file, source=path)
    except FileNotFoundError:
        return None
    except configparser.MissingSectionHeaderError as exc:
        # Not chained, here and below: the parser's message quotes the line, which may hold a secret.
        raise ConfigError(f"AWS file {path} has a setting before any [section], line {exc.lineno}") from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(line) for line, _ in exc.errors)
        raise ConfigError(f"AWS file {path} has line(s) that are not 'name = value': {lines}") from None
    except configparser.Error as exc:
        raise ConfigError(f"AWS file {path} is malformed: {exc.message}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"AWS file {path} cannot be read: {exc}") from exc
    return parser
