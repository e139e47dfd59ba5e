"""Fixtures shared by the platform-level tests."""

from __future__ import annotations

import pytest

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
