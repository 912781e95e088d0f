"""What produced a measurement or an artifact: the machine, the Python packages and the
checkout's revision, recorded beside the numbers (BENCHMARKS.md, benchmarks/kwok-e2e.md, a load
test's summary.json, a model's metadata.json). Free of Locust: every command may import it."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from kserve_gitops.repo import Repo


def cores() -> int:
    return psutil.cpu_count() or 1


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS and Python of this machine."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    os_release = Path("/etc/os-release")
    pretty = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in (os_release.read_text().splitlines() if os_release.exists() else [])
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    return {
        "cpu": cpu,
        "cores": cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{pretty}, kernel {platform.release()}",
        "python": platform.python_version(),
    }


def package_versions(names: Iterable[str], missing: str | None = None) -> dict[str, str | None]:
    """The installed version of each distribution, `missing` for one that is not installed."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = missing
    return found


def git_revision(repo: Repo) -> str | None:
    """The checkout's short commit, None outside a git checkout."""
    git = subprocess.run(
        ["git", "-C", str(repo.root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return git.stdout.strip() or None
