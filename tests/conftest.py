"""Shared fixtures. Commands are run as users run them (`kgops <command>`),
against this checkout or a throwaway copy of it that a test may break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kserve_gitops.repo import Repo, paths
from kserve_gitops.serving import process
from kserve_gitops.upstream import charts, crds
from tests import REPO

Kgops = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session", autouse=True)
def crd_cache() -> list[Path]:
    """The pinned CRDs (from CRD_DIR, or downloaded once): every schema test needs them."""
    return crds.ensure(REPO)


@pytest.fixture(scope="session")
def shared_charts() -> Path:
    """A folder of upstream charts laid out <chart>/<version>/ for the tests that render them:
    CHART_DIR, else ../shared/charts beside the checkout, else the cache `make charts` filled.
    Skipped without one, except in CI where it must exist."""
    candidates = [REPO.root.parent / "shared" / "charts", charts.cache_dir(REPO)]
    if os.environ.get("CHART_DIR"):
        candidates = [Path(os.environ["CHART_DIR"])]
    folder = next((c for c in candidates if any(c.glob("*/*/Chart.yaml"))), None)
    if folder is None:
        message = f"no upstream charts in {' or '.join(map(str, candidates))}: run `make charts`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def repo() -> Repo:
    """The checkout under test."""
    return REPO


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository (CRD cache included, so no network) that a test may break."""
    dest = tmp_path / "repo"
    skip = shutil.ignore_patterns(".venv*", ".git", "reports", "__pycache__", ".*_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # Not the clusters running under .cache/e2e (live etcd data, gigabytes of it).
        live = {"e2e"} if Path(folder) == paths.ROOT / ".cache" else set()
        return set(skip(folder, names)) | live

    shutil.copytree(paths.ROOT, dest, ignore=ignore)
    return dest


@pytest.fixture
def kgops() -> Kgops:
    """Run `kgops <command> args...` as users do, with KGOPS_ROOT pointing at `root`."""

    def run(command: str, *args: str, root: Path = paths.ROOT, timeout: float = 300):
        env = {**os.environ, "KGOPS_ROOT": str(root)}
        return subprocess.run(
            [sys.executable, "-m", "kserve_gitops.cli", command, *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def local_model_server() -> Iterator[process.LocalServer]:
    """One `kgops serve` for the session, on a free port, access log off."""
    with process.running(REPO, extra_args=["--access-log", "false"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def model_server(local_model_server: process.LocalServer) -> str:
    """Base URL of the session's local sklearn-iris server (ready to answer)."""
    return local_model_server.url
