"""S3 settings not given come from the AWS variables and shared files, in AWS's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from objstore import ConfigError, PrefixedStorage, S3Storage, from_config, from_url
from objstore.s3.environment import resolve_s3
from tests.awsenv import isolate, write_aws_file


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


def s3_settings(url: str = "s3://bucket", **options: object) -> dict[str, object]:
    storage = from_url(url, **options)
    if isinstance(storage, PrefixedStorage):
        storage = storage.storage
    assert isinstance(storage, S3Storage)
    return dict(storage._settings)


# -- the endpoint -------------------------------------------------------------------


def test_endpoint_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert s3_settings()["endpoint"] == "s3.us-east-1.amazonaws.com"  # AWS, by default
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:9000")
    assert (s3_settings()["endpoint"], s3_settings()["secure"]) == ("general:9000", False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3only:9443")
    assert (s3_settings()["endpoint"], s3_settings()["secure"]) == ("s3only:9443", True)
    assert s3_settings(endpoint="http://explicit:1")["endpoint"] == "explicit:1"
    assert resolve_s3().endpoint_source == "AWS_ENDPOINT_URL_S3"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "")  # empty: unset
    assert resolve_s3().endpoint_source == "AWS_ENDPOINT_URL"


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("eu-west-1", "s3.eu-west-1.amazonaws.com"),
        ("cn-north-1", "s3.cn-north-1.amazonaws.com.cn"),
    ],
)
def test_aws_endpoint_follows_the_region(region: str, endpoint: str) -> None:
    settings = s3_settings(region=region)
    assert (settings["endpoint"], settings["secure"], settings["region"]) == (endpoint, True, region)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AWS_ENDPOINT_URL_S3", "localhost:9000"),
        ("AWS_ENDPOINT_URL", "ftp://h"),
        ("AWS_ENDPOINT_URL", "http://h:port"),
        ("AWS_ENDPOINT_URL_S3", "http://h/path"),
    ],
)
def test_bad_endpoint_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        from_url("s3://bucket")
    assert name in str(caught.value) and value in str(caught.value)


# -- the region ---------------------------------------------------------------------


def test_region_order(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://h:9000")
    assert s3_settings()["region"] is None  # another server: minio asks it
    write_aws_file(home / ".aws" / "config", "[default]\nregion = ap-south-1\n")
    assert s3_settings()["region"] == "ap-south-1"
    assert resolve_s3().region_source == f"region of profile 'default' in {home}/.aws/config"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert s3_settings()["region"] == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert s3_settings()["region"] == "eu-west-3"
    assert s3_settings(region="us-west-2")["region"] == "us-west-2"


def test_region_of_a_named_profile(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    write_aws_file(
        home / ".aws" / "config",
        "[default]\nregion = us-west-1\n[profile dev]\nregion = eu-north-1\n[prod]\nregion = sa-east-1\n",
    )
    assert s3_settings()["region"] == "us-west-1"
    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert s3_settings()["region"] == "eu-north-1"
    assert s3_settings()["endpoint"] == "s3.eu-north-1.amazonaws.com"
    # in the config file, a profile other than default is [profile name]: [prod] is not one
    with pytest.raises(ConfigError, match="'prod'"):
        s3_settings(profile="prod")


def test_bad_region_is_named(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("AWS_REGION", "eu west")
    with pytest.raises(ConfigError, match="AWS_REGION"):
        from_url("s3://bucket")
    monkeypatch.delenv("AWS_REGION")
    write_aws_file(home / ".aws" / "config", "[default]\nregion = not/a/region\n")
    with pytest.raises(ConfigError, match="config"):
        from_url("s3://bucket")


# -- the credentials ----------------------------------------------------------------


def credentials(url: str = "s3://bucket", **options: object) -> tuple[object, object, object]:
    settings = s3_settings(url, **options)
    return settings["access_key"], settings["secret_key"], settings["session_token"]


def test_credentials_order(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    assert credentials() == (None, None, None)  # none anywhere: anonymous
    write_aws_file(
        home / ".aws" / "config", "[default]\naws_access_key_id = cfg\naws_secret_access_key = cfg-s\n"
    )
    assert credentials() == ("cfg", "cfg-s", None)
    write_aws_file(
        home / ".aws" / "credentials",
        "[default]\naws_access_key_id = file\naws_secret_access_key = file-s\naws_session_token = file-t\n",
    )
    assert credentials() == ("file", "file-s", "file-t")
    assert resolve_s3().credentials_source == f"profile 'default' in {home}/.aws/credentials"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-s")
    assert credentials() == ("env", "env-s", None)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-t")
    assert credentials() == ("env", "env-s", "env-t")
    # explicit arguments win, and never take the environment's session token
    assert credentials(access_key="arg", secret_key="arg-s") == ("arg", "arg-s", None)
    assert credentials(access_key="arg", secret_key="arg-s", session_token="arg-t") == (
        "arg",
        "arg-s",
        "arg-t",
    )


def test_profile_order(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    write_aws_file(
        home / ".aws" / "credentials",
        "[default]\naws_access_key_id = d\naws_secret_access_key = d-s\n"
        "[dev]\naws_access_key_id = dev\naws_secret_access_key = dev-s\n",
    )
    write_aws_file(
        home / ".aws" / "config",
        "[profile ops]\naws_access_key_id = ops\naws_secret_access_key = ops-s\nregion = eu-west-2\n",
    )
    assert credentials()[0] == "d"
    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert credentials()[0] == "dev"
    assert credentials(profile="ops")[0] == "ops"  # the argument wins over AWS_PROFILE
    assert s3_settings(profile="ops")["region"] == "eu-west-2"


def test_file_locations_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shared = write_aws_file(
        tmp_path / "elsewhere" / "creds", "[default]\naws_access_key_id = moved\naws_secret_access_key = m\n"
    )
    config = write_aws_file(tmp_path / "elsewhere" / "conf", "[default]\nregion = ca-central-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    settings = s3_settings()
    assert (settings["access_key"], settings["region"]) == ("moved", "ca-central-1")


def test_secrets_with_percent_signs_are_read_as_written(home: Path) -> None:
    write_aws_file(
        home / ".aws" / "credentials", "[default]\naws_access_key_id = a%b\naws_secret_access_key = %(x)s\n"
    )
    assert credentials()[:2] == ("a%b", "%(x)s")


@pytest.mark.parametrize(
    ("variables", "missing"),
    [
        ({"AWS_ACCESS_KEY_ID": "a"}, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, "AWS_ACCESS_KEY_ID"),
    ],
)
def test_half_credentials_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], missing: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=missing):
        from_url("s3://bucket")


def test_half_credentials_in_a_file(home: Path) -> None:
    write_aws_file(home / ".aws" / "credentials", "[default]\naws_access_key_id = a\n")
    with pytest.raises(ConfigError, match="aws_secret_access_key is missing"):
        from_url("s3://bucket")


def test_unsupported_credential_sources_are_named(home: Path) -> None:
    write_aws_file(home / ".aws" / "config", "[profile sso]\nsso_session = corp\nregion = eu-west-1\n")
    with pytest.raises(ConfigError, match="sso_session") as caught:
        from_url("s3://bucket", profile="sso")
    assert "AWS_ACCESS_KEY_ID" in str(caught.value)
    assert credentials(profile="sso", access_key="a", secret_key="s")[0] == "a"  # not needed: not read


def test_missing_profile_is_named(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    write_aws_file(
        home / ".aws" / "credentials", "[default]\naws_access_key_id = a\naws_secret_access_key = s\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(ConfigError, match="'nope' \\(from AWS_PROFILE\\)"):
        from_url("s3://bucket")
    with pytest.raises(ConfigError, match="'other' \\(from argument\\)"):
        from_url("s3://bucket", profile="other")
    monkeypatch.delenv("AWS_PROFILE")
    assert credentials()[0] == "a"


def test_malformed_file_is_named_without_its_secrets(home: Path) -> None:
    path = write_aws_file(home / ".aws" / "credentials", "[default]\naws_access_key_id = a\nSECRETVALUE\n")
    with pytest.raises(ConfigError) as caught:
        from_url("s3://bucket")
    assert str(path) in str(caught.value) and "3" in str(caught.value)
    assert "SECRETVALUE" not in str(caught.value) and caught.value.__cause__ is None
    write_aws_file(home / ".aws" / "credentials", "aws_access_key_id = SECRETVALUE\n")
    with pytest.raises(ConfigError, match="before any") as caught:
        from_url("s3://bucket")
    assert "SECRETVALUE" not in str(caught.value)


def test_from_config_reads_the_environment_too(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    write_aws_file(
        home / ".aws" / "credentials", "[ci]\naws_access_key_id = ci\naws_secret_access_key = ci-s\n"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://ignored:1")  # type: s3 names its endpoint
    storage = from_config({"type": "s3", "endpoint": "http://h:9000", "bucket": "b", "profile": "ci"})
    assert isinstance(storage, S3Storage)
    assert (storage.endpoint, storage._settings["access_key"]) == ("h:9000", "ci")
    by_url = from_config({"url": "s3://b", "profile": "ci"})
    assert isinstance(by_url, S3Storage) and by_url.endpoint == "ignored:1"
