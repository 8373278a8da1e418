"""An AWS environment that points at the S3 test server: what an example reading ``AWS_*`` sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import awsenv
from tests.conftest import S3Endpoint


def use_test_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: S3Endpoint) -> None:
    """Set ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``
    to reach ``endpoint``, and nothing else from AWS (no other variable, no ``~/.aws``)."""
    awsenv.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"{'https' if endpoint.secure else 'http'}://{endpoint.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_key)
    monkeypatch.setenv("AWS_REGION", endpoint.region or "us-east-1")
