"""One open-loop measurement of a local server, and the search for the highest arrival rate
whose p99 stays within a limit: what `kgops bench` and the runtimes side by side are built on."""

from __future__ import annotations

from kserve_gitops.load import headless
from kserve_gitops.load.summary import LoadOptions

import math
import time
from typing import Any

import psutil

from kserve_gitops.base import ratesearch
from kserve_gitops.base.ratesearch import Knobs
from kserve_gitops.repo import Repo, slo
from kserve_gitops.serving.process import LocalServer

SETTINGS: dict[str, list[str]] = {
    # What `kserve.ModelServer` does out of the box: per-request latency log and access log.
    "upstream": [],
    "tuned": [
        "--enable-latency-logging",
        "false",
        "--access-log",
        "false",
        "--event-loop",
        "uvloop",
    ],
}
FIXED_RATE = 80.0
# Bench SLO: the search only looks at p99 and errors; the fixed-rate point is reported as is.
NO_TARGETS = slo.Targets(
    latency_avg_ms=math.inf, latency_max_ms=math.inf, throughput_min_rps=0, error_ratio_max=1
)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_procs(local: LocalServer) -> list[psutil.Process]:
    root = psutil.Process(local.process.pid)
    return [root, *root.children(recursive=True)]


def measure(
    repo: Repo,
    local: LocalServer,
    protocol: str,
    rate: float,
    duration: float,
    *,
    workers: int = 0,
    master_port: int = 5557,
) -> dict[str, Any]:
    """One open-loop run (workers: Locust worker processes sharing the plan); the summary's key
    numbers plus the server's CPU share."""
    users = max(16, math.ceil(rate * 0.1))  # covers 100 ms in flight; slower fails anyway
    procs = server_procs(local)
    before, wall = cpu_seconds(procs), time.monotonic()
    opts = LoadOptions(
        target=local.url,
        protocol=protocol,
        rate=rate,
        duration=duration,
        users=users,
        model=local.model_name,
        progress_s=0,
        workers=workers,
        master_port=master_port,
    )
    summary = headless.run_load(repo, opts, NO_TARGETS, out=lambda _line: None).summary
    server_cpu = 100 * (cpu_seconds(procs) - before) / (time.monotonic() - wall)
    return {
        "rate": rate,
        "achieved_rps": summary["throughput_rps"],
        "latency_ms": {k: summary["latency_ms"][k] for k in ("avg", "p50", "p95", "p99", "max")},
        "service_p99_ms": summary["service_time_ms"]["p99"],
        "errors": summary["requests"]["failures"] + summary["requests"]["unfinished"],
        "requests": summary["requests"]["completed"],
        "generator_cpu_pct": summary["generator"]["cpu_percent_of_one_core"],
        "generator_cpu_ms_per_request": summary["generator"]["cpu_ms_per_request"],
        "send_lag_p99_ms": summary["generator"]["send_lag_ms"]["p99"],
        "server_cpu_pct": server_cpu,
    }


def search_max_rate(
    repo: Repo, local: LocalServer, protocol: str, knobs: Knobs, log, **load: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The highest rate a local server sustains (kserve_gitops.base.ratesearch's search)."""
    return ratesearch.search(
        lambda rate, seconds: measure(repo, local, protocol, rate, seconds, **load), knobs, log
    )
