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

from kserve_gitops.repo import Repo
from kserve_gitops.serving import process
from kserve_gitops.upstream import charts, crds
from tests import REPO
from tests.broken_copy import in_process

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
    """A copy of the repository (CRD and chart caches included, so no network) that a test may
    break. Caches no test edits are linked, not copied: tools (promtool is 46 MB), the schema
    cache and the content-addressed results of the upstream values check."""
    dest = tmp_path / "repo"
    skip = shutil.ignore_patterns(".venv*", ".git", "reports", "__pycache__", ".*_cache")
    cache = REPO.cache
    linked = {"bin", "schemas", "upstream-values"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        # Not the clusters running under .cache/e2e (live etcd data, gigabytes of it).
        here = {"e2e", *linked} if Path(folder) == cache else set()
        return set(skip(folder, names)) | here

    shutil.copytree(REPO.root, dest, ignore=ignore)
    for name in sorted(linked):
        if (cache / name).is_dir():
            (dest / ".cache").mkdir(exist_ok=True)
            (dest / ".cache" / name).symlink_to(cache / name, target_is_directory=True)
    return dest


# Commands that leave nothing behind in the interpreter (no Locust, whose gevent patches it; no
# servers): the fixture runs these in-process, saving an interpreter start and the Helm SDK load
# per call. Every other command runs as a child process, as users run it.
IN_PROCESS = frozenset(
    {
        "validate",
        "render",
        "diff",
        "policy",
        "platform",
        "chart-version",
        "charts",
        "crds",
        "registry",
        "gate",
        "rollout",
        "alerts",
        "dashboard",
    }
)


@pytest.fixture
def kgops(capsys: pytest.CaptureFixture[str]) -> Kgops:
    """Run `kgops <command> args...` against the checkout at `root` (default: this one), with
    its exit code and output as a CompletedProcess."""

    def run(command: str, *args: str, root: Path = REPO.root, timeout: float = 300):
        if command not in IN_PROCESS:
            return subprocess.run(
                [sys.executable, "-m", "kserve_gitops.cli", command, *args],
                cwd=root,
                env={**os.environ, "KGOPS_ROOT": str(root)},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        return in_process(command, root, capsys, *args)

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Locust's gevent patches the interpreter that imports it, which stalls pytest-xdist's
    worker channel: tests reach Locust through child processes only."""
    if "locust" in sys.modules:
        raise pytest.UsageError("a test module imports locust (directly or through the harness)")
