"""Fixtures for the docker feature modules (encryptedEnv keys; the platform comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dfhelpers import GpgKey, make_gpg_key


@pytest.fixture(scope="session")
def gpg_key() -> Iterator[GpgKey]:
    """An ed25519/cv25519 worker key (fast to make); shared by the session."""
    yield from make_gpg_key("future-default")


@pytest.fixture(scope="session")
def other_gpg_key() -> Iterator[GpgKey]:
    """A second key: messages encrypted to it must not decrypt with the worker's key."""
    yield from make_gpg_key("future-default")
