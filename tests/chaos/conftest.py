from __future__ import annotations

import pytest

from engine.runtime.config import load_settings


@pytest.fixture(scope="session")
def settings():
    """Default settings, whatever DN_* flags the developer's shell has."""
    return load_settings(env={})
