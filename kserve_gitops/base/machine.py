"""What produced a measurement or an artifact: the machine, how busy it was, the Python
packages and the checkout's revision, recorded beside the numbers (BENCHMARKS.md,
benchmarks/kwok-e2e.md, a load test's summary.json, a model's metadata.json). Free of Locust:
every command may import it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


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


def git_revision(root: Path) -> str | None:
    """The short commit of the checkout at `root`, None outside a git checkout."""
    git = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return git.stdout.strip() or None


def wait_for_quiet(
    timeout_s: float,
    max_load: float,
    *,
    loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll the 1-minute load average until it is below `max_load` or `timeout_s` passed
    (other work on the machine skews every number); what was found, for the results."""
    started = clock()
    while (load := loadavg()[0]) >= max_load and clock() - started < timeout_s:
        log(f"waiting for a quiet machine: load average {load:.2f} >= {max_load:g}")
        sleep(min(15.0, max(0.0, timeout_s - (clock() - started))))
    found = list(loadavg())
    quiet = found[0] < max_load
    log(
        f"starting at load average {found[0]:.2f}"
        + ("" if quiet else f": BUSY (>= {max_load:g}), the results are flagged")
    )
    return {
        "threshold": max_load,
        "timeout_s": timeout_s,
        "waited_s": clock() - started,
        "load_average": found,
        "quiet": quiet,
    }
