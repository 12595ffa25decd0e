"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real benchmark files: $TOOLSHIFT_SHARED_DATA, else <repo>/../shared/data."""
    return Path(os.environ.get("TOOLSHIFT_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory; the test is skipped, with the reason, if it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data directory {path} is absent (set TOOLSHIFT_SHARED_DATA to it)")
    return path
