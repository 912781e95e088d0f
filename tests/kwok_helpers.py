"""What the tests marked kwok share: they need binaries `make binaries` builds, skip without
them, and fail without them under CI (which builds them first)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kserve_gitops.localcluster import binaries


def need_binaries(*locators: Callable[[], dict[str, Path]], root: bool = False) -> None:
    """Each locator's binaries built (else skip, or under CI raise); `root`: also skip when
    not root (network namespaces)."""
    try:
        for locate in locators:
            locate()
    except binaries.BuildError as exc:
        if os.environ.get("CI"):
            raise  # CI builds them first (`make binaries DELIVERY=flux`): missing is a failure
        pytest.skip(f"kwok binaries: {exc}")
    if root and os.geteuid() != 0:
        pytest.skip("the controllers' network namespaces need root")
