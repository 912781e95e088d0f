"""One Locust open-loop run (`kgops loadtest` in its own process) against a cluster path: its
summary.json."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.base.arrivals import Arrivals
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.e2e.paths import PathError


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()


def summary(
    runner: Runner,
    target: Target,
    env: str,
    arrivals: Arrivals,
    duration: float,
    model: str,
    workers: int = 0,
) -> dict[str, Any]:
    """The summary.json of one run of `duration` seconds at `arrivals` (ramped: over the whole
    run), from `workers` Locust worker processes (0: one process)."""
    with tempfile.TemporaryDirectory(prefix="kgops-bench-") as tmp:
        argv = [
            sys.executable,
            "-m",
            "kserve_gitops.load.loadtest",
            "--target",
            target.url,
            "--model",
            model,
            "--env",
            env,
            "--rate",
            f"{arrivals.rate:g}",
            "--duration",
            f"{duration:g}s",
            "--reports",
            tmp,
            *(arg for name, value in target.headers for arg in ("--header", f"{name}: {value}")),
        ]
        if arrivals.end_rate is not None:
            argv += ["--ramp-to", f"{arrivals.end_rate:g}"]
        if workers:
            argv += ["--workers", str(workers)]
        # A missed SLO exits 1; the figures still say what happened.
        with contextlib.suppress(CommandError):
            runner.run(argv, timeout=duration + 300, quiet=True)
        found = sorted(Path(tmp).glob("*/summary.json"))
        if not found:
            raise PathError(f"{target.name}: the load test wrote no summary")
        return json.loads(found[-1].read_text())


def generator_cpu_pct(doc: dict[str, Any]) -> float:
    """Every generator process (one without --workers), as % of one core over the run."""
    return sum(p["cpu_percent_of_one_core"] for p in doc["generator"]["processes"])
