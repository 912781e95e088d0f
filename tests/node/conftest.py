"""Fixtures of the real node's tests shared by more than one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve_gitops.node import imagepins


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty image cache of the test's own."""
    monkeypatch.setenv(imagepins.ENV_CACHE, str(tmp_path / "images"))
    return tmp_path / "images"
