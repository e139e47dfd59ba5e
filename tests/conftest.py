"""Fixtures shared by the platform-level tests."""

from __future__ import annotations

import pytest

from tests.helpers.mesh import running_platform


@pytest.fixture
async def platform(tmp_path):
    """The whole platform on port 0 over mTLS, on a fresh PostgreSQL database."""
    async with running_platform(tmp_path / "data") as running:
        yield running
