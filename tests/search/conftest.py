"""Search tests never reach the hub: each starts offline with an empty teacher-config cache."""

import pytest

from search import teachers


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    teachers._hub_config.cache_clear()
    yield
    teachers._hub_config.cache_clear()
