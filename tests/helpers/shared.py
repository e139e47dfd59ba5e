"""Locate the read-only reference material in ../shared/reference (next to the repository).

Set INNOMINATUS_SHARED_DIR to use a shared/ directory somewhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "INNOMINATUS_SHARED_DIR"


def shared_dir() -> Path:
    override = os.environ.get(ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[2].parent / "shared"


def shared_reference(*parts: str) -> Path:
    """shared/reference/<parts...>; fails the test, naming the missing path, when it does not exist."""
    base = shared_dir()
    path = base.joinpath("reference", *parts)
    if not path.exists():
        where = f"{ENV}={os.environ[ENV]}" if os.environ.get(ENV, "").strip() else "../shared next to the repository"
        missing = base if not base.is_dir() else path
        pytest.fail(
            f"shared reference material missing: {missing} does not exist "
            f"(looked for reference/{'/'.join(parts)} under {base}, from {where}; "
            f"set {ENV} to the directory that holds reference/)",
            pytrace=False,
        )
    return path
