"""Where the local cluster's Go builds are kept: outside the checkout ($KGOPS_BIN_CACHE, else
the user's cache directory), each binary by name, version and Go version and each generated build
module beside them, so that a fresh clone on the same machine, and every builder of the harness
(kwok's, the controllers', the real node's), finds what was built once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kserve_gitops.base.pinned import user_cache

ENV_CACHE = "KGOPS_BIN_CACHE"


def cache_root() -> Path:
    """Outside the checkout, so that a fresh clone on the same machine finds the binaries:
    $KGOPS_BIN_CACHE, else the user's cache directory."""
    return user_cache("bin", ENV_CACHE)


def binary_path(name: str, version: str, gover: str) -> Path:
    """Where a binary is cached: by name, version and Go version."""
    return cache_root() / name / version / gover / name


def _module_dir(name: str) -> Path:
    return cache_root() / "_modules" / name


def _new_module(name: str) -> tuple[Path, Path]:
    """(final dir, temporary dir beside it): a module dir appears complete or not at all."""
    mod = _module_dir(name)
    mod.parent.mkdir(parents=True, exist_ok=True)
    return mod, Path(tempfile.mkdtemp(prefix=f".{name}-", dir=mod.parent))
