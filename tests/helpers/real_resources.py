"""Environment that lets the built-in `postgres` / `redis` resource definitions provision for real
on the servers scripts/test starts, and the envelope secret store keep their secret outputs."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.engine import make_url

from innominatus.resources.secrets import encode_master_key, generate_master_key
from tests.helpers.database import test_database_url


def resource_env() -> dict[str, str]:
    redis_url = os.environ.get("INNOMINATUS_TEST_REDIS_URL", "").strip()
    if not redis_url:
        pytest.fail("INNOMINATUS_TEST_REDIS_URL is not set: run the suite with scripts/test", pytrace=False)
    return {
        "INNOMINATUS_POSTGRES_ADMIN_URL": make_url(test_database_url()).set(drivername="postgresql")
        .render_as_string(hide_password=False),
        "INNOMINATUS_REDIS_ADMIN_URL": redis_url,
        "INNOMINATUS_SECRETS_KEY": encode_master_key(generate_master_key()),
    }
