"""The options of one open-loop run and the summary.json it ends with (headless, or stopped in
the dashboard): a module of its own so that the dashboard (load.dashboard) builds the summary
without importing the run."""

from __future__ import annotations

from kserve_gitops.load import openloop, tally
from locust.env import Environment

import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

from kserve_gitops.base import machine
from kserve_gitops.base.arrivals import Arrivals
from kserve_gitops.repo import Repo, slo


@dataclass(frozen=True)
class LoadOptions:
    target: str
    protocol: str
    rate: float
    duration: float  # seconds
    users: int
    model: str
    host_header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # more request headers (name, value)
    progress_s: float = 5.0  # 0: no progress lines
    workers: int = 0  # Locust worker processes started here (0: one process, no master)
    remote_workers: int = 0  # workers started elsewhere with --worker --master-host
    master_bind_host: str = "127.0.0.1"
    master_port: int = 5557
    ramp_to: float | None = None  # the rate changes linearly from `rate` to this over the run

    @property
    def arrivals(self) -> Arrivals:
        if self.ramp_to is None:
            return Arrivals(self.rate)
        return Arrivals(self.rate, self.ramp_to, self.duration)


def _server_version(opts: LoadOptions) -> str | None:
    """What the server reports on the V2 metadata endpoint, if it answers."""
    import httpx  # here: keep the import after Locust's monkey-patching

    headers = {"Host": opts.host_header} if opts.host_header else {}
    try:
        doc = httpx.get(opts.target.rstrip("/") + "/v2", headers=headers, timeout=2).json()
        return f"{doc.get('name')} {doc.get('version')}"
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _versions(repo: Repo, opts: LoadOptions) -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        **machine.package_versions(["locust", "hdrhistogram", "kserve"]),
        "server": _server_version(opts),
        "git": machine.git_revision(repo.root),
    }


def generator_figures(
    totals: tally.Totals, cpu_s: float, wall_s: float, *, distributed: bool
) -> dict[str, Any]:
    """CPU of the generator processes: this one (the master, when distributed) and each worker."""
    here = {
        "source": "master" if distributed else "local",
        "cpu_s": cpu_s,
        "cpu_percent_of_one_core": 100 * cpu_s / wall_s if wall_s else 0.0,
    }
    processes = [here] + (
        [
            {k: g[k] for k in ("source", "cpu_s", "cpu_percent_of_one_core")}
            for g in totals.generators
        ]
        if distributed
        else []
    )
    completed = totals.recorder.requests
    rec = totals.recorder
    return {
        # The busiest process: the one that bounds the rate.
        "cpu_percent_of_one_core": max(p["cpu_percent_of_one_core"] for p in processes),
        "cpu_ms_per_request": 1000 * sum(p["cpu_s"] for p in processes) / completed
        if completed
        else 0.0,
        "processes": processes,
        "cores": machine.cores(),
        "send_lag_ms": {
            f"p{p}": rec.lag.get_value_at_percentile(p) / 1000 if rec.requests else 0.0
            for p in (50, 99, 100)
        },
    }


def build_summary(
    repo: Repo,
    opts: LoadOptions,
    targets: slo.Targets,
    totals: tally.Totals,
    env: Environment,
    *,
    env_name: str | None,
    slo_source: str,
    started_at: float,
    finished_at: float,
    first_slot_at: float,
    generator: dict[str, Any],
) -> dict[str, Any]:
    """summary.json of a run (headless, or stopped in the dashboard)."""
    rec = totals.recorder
    latency, service = totals.latency(), totals.service()
    checks = totals.checks(targets)
    total = env.stats.total
    return {
        "verdict": "PASS" if all(c.passed for c in checks) else "FAIL",
        "checks": [c.as_dict() for c in checks],
        "env": env_name,
        "slo_config": slo_source,
        "targets": asdict(targets),
        "target_url": opts.target,
        "host_header": opts.host_header,
        "headers": dict(opts.headers),
        "model": opts.model,
        "protocol": opts.protocol,
        "load": {
            "mode": f"open loop, {'ramped' if opts.ramp_to else 'fixed'} arrival rate",
            "rate_rps": opts.rate,
            "ramp_to_rps": opts.ramp_to,
            # Unix time of slot 0: the timeline's second 0, to align with what else was sampled.
            "first_slot_at": round(first_slot_at, 3),
            "duration_s": opts.duration,
            "planned_requests": totals.offered,
            "users": opts.users,
            "worker_processes": len(generator["processes"]) - 1,
        },
        "requests": {
            "completed": rec.requests,
            "failures": rec.failures,
            "unfinished": totals.unfinished,  # in flight at the end, never sent, or lost
            "error_ratio": totals.error_ratio,
        },
        "throughput_rps": totals.throughput_rps,
        "latency_ms": {"basis": "from scheduled send time", **latency},
        "service_time_ms": {"basis": "from actual send", **service},
        # Full distributions (microseconds, HdrHistogram.decode) for merging or re-analysis.
        "histograms_us": {
            "scheduled": rec.scheduled.encode().decode(),
            "service": rec.service.encode().decode(),
        },
        "generators": totals.generators,
        "lost_workers": [g["source"] for g in totals.lost],
        "locust": {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "avg_ms": total.avg_response_time,
            "min_ms": total.min_response_time or 0,
            "max_ms": total.max_response_time,
            "p50_ms": total.get_response_time_percentile(0.5),
            "p99_ms": total.get_response_time_percentile(0.99),
            "rps": total.total_rps,
            "errors": {
                f"{e.method} {e.name}: {e.error}": e.occurrences for e in env.stats.errors.values()
            },
        },
        "generator": generator,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "versions": _versions(repo, opts),
        "timeline": _timeline(rec),
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _timeline(rec: openloop.Recorder) -> list[dict[str, float]]:
    """Per second: scheduled-time latency percentiles of the requests due in it, completions."""
    seconds = set(rec.latency_by_second) | set(rec.done_by_second)
    rows = []
    for second in range(0, max(seconds, default=-1) + 1):
        hist = rec.latency_by_second.get(second)
        pct = hist.get_percentile_to_value_dict([50, 95, 99]) if hist else {}
        rows.append(
            {
                "t": second,
                "p50_ms": pct.get(50, 0) / 1000,
                "p95_ms": pct.get(95, 0) / 1000,
                "p99_ms": pct.get(99, 0) / 1000,
                "max_ms": hist.get_max_value() / 1000 if hist else 0.0,
                "completed": rec.done_by_second.get(second, 0),
                "failed": rec.failed_by_second.get(second, 0),
            }
        )
    return rows
