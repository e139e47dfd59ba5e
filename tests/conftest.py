"""Fixtures shared by the platform-level tests."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import structlog

from innominatus.kit import logs

from tests.helpers.identity import IdentityClient
from tests.helpers.mesh import running_platform
from tests.helpers.real_resources import resource_env


@pytest.fixture
async def platform(tmp_path):
    """The whole platform on port 0 over mTLS, on a fresh PostgreSQL database."""
    async with running_platform(tmp_path / "data") as running:
        yield running


@pytest.fixture
def resource_platform_env() -> dict[str, str]:
    """More environment for `resource_platform`, set after the resource servers' URLs: a module
    overrides this fixture to tune that platform (its CLI config directory, the health monitor)."""
    return {}


@pytest.fixture
async def resource_platform(tmp_path, monkeypatch, resource_platform_env):
    """The platform whose built-in postgres / redis definitions provision for real on the servers
    scripts/test starts (tests/helpers/real_resources.py), with each environment's GitOps
    repository a local one under its data directory (no INNOMINATUS_GITOPS_URL_TEMPLATE).
    ``pg_admin_url`` is the PostgreSQL server's admin URL, to look at what was made there."""
    env = resource_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("INNOMINATUS_GITOPS_URL_TEMPLATE", raising=False)
    for name, value in resource_platform_env.items():
        monkeypatch.setenv(name, value)
    async with running_platform(tmp_path / "data") as running:
        running.pg_admin_url = env["INNOMINATUS_POSTGRES_ADMIN_URL"]
        yield running


@pytest.fixture
def json_logs():
    """The process's log output, rendered exactly as configured by innominatus.kit.logs
    (JSON lines, request context, redaction), at DEBUG so nothing is filtered away."""
    root = logging.getLogger()
    saved_structlog = structlog.get_config()
    saved_root = (list(root.handlers), root.level)
    buffer = io.StringIO()
    real = sys.stderr
    sys.stderr = buffer  # configure() binds its handler and logger factory to sys.stderr
    try:
        logs.configure("DEBUG")
    finally:
        sys.stderr = real
    try:
        yield buffer
    finally:
        structlog.configure(**saved_structlog)
        root.handlers, level = saved_root
        root.setLevel(level)


@pytest.fixture
async def identity(platform):
    """The platform's identity service, called directly (tests/helpers/identity.py)."""
    client = IdentityClient(platform)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def admin(platform) -> str:
    """An access token of the platform's bootstrap admin."""
    return await platform.login_admin()
