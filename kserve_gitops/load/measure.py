"""One open-loop measurement of a local server, and the search for the highest arrival rate
whose p99 stays within a limit: what `kgops bench` and the runtimes side by side are built on."""

from __future__ import annotations

from kserve_gitops.load import headless
from kserve_gitops.load.summary import LoadOptions

import math
import time
from dataclasses import dataclass
from typing import Any

import psutil

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


@dataclass(frozen=True)
class Knobs:
    fixed_s: float = 10.0
    step_s: float = 5.0
    p99_ms: float = 50.0
    start_rate: float = 100.0
    max_rate: float = 6400.0
    resolution: float = 1.15  # bisect until failing/passing rate is below this ratio
    max_steps: int = 16  # measurements, retries included


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


def passes(point: dict[str, Any], p99_ms: float) -> bool:
    return (
        point["errors"] == 0
        and point["latency_ms"]["p99"] <= p99_ms
        and point["achieved_rps"] >= 0.95 * point["rate"]
    )


def search_max_rate(
    repo: Repo, local: LocalServer, protocol: str, knobs: Knobs, log, **load: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Double the rate until p99 breaks, then bisect (geometrically) between pass and fail."""
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    low, high, rate = 0.0, math.inf, knobs.start_rate
    while len(steps) < knobs.max_steps:
        # A failing step is measured once more: on a shared machine one neighbour's burst
        # can break a 5 s p99. Both attempts are kept in the results.
        for attempt in (1, 2):
            point = measure(repo, local, protocol, rate, knobs.step_s, **load)
            ok = passes(point, knobs.p99_ms)
            steps.append({**point, "pass": ok, "attempt": attempt})
            log(
                f"    {rate:7.0f} req/s: p99 {point['latency_ms']['p99']:8.2f} ms, achieved "
                f"{point['achieved_rps']:7.1f}, errors {point['errors']}, generator "
                f"{point['generator_cpu_pct']:3.0f}% cpu, server {point['server_cpu_pct']:3.0f}%"
                f" -> {'pass' if ok else 'fail'}"
            )
            if ok:
                break
        if ok:
            low, best = rate, point
        else:
            high = rate
        if high == math.inf:
            if rate >= knobs.max_rate:
                break
            rate = min(rate * 2, knobs.max_rate)
        elif low == 0 or high / low <= knobs.resolution:
            break
        else:
            rate = round(math.sqrt(low * high) / 10) * 10
        time.sleep(0.5)  # let the server drain between steps
    return best, steps
