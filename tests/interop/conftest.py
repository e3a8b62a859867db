"""Every test here runs on one intra-op thread (see `one_thread` in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_models(one_thread):
    yield
