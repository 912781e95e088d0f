"""Open-loop load test of a prediction endpoint with Locust (as a library) and an SLO verdict.

`kgops loadtest --target URL --rate 80 --duration 30s --protocol v1 --env dev`
sends requests at a fixed arrival rate, prints progress, writes reports/<timestamp>/ (Locust CSV
and HTML, summary.json, plot.png), prints the verdict table and exits 1 when a target is missed.
`--ui` runs the Locust dashboard on :8089 against the same locustfile instead, with an SLO tab.
`--workers N` makes this process a Locust master with N worker processes sharing the plan;
`--worker --master-host HOST` runs a worker of a master on another machine.
"""

from __future__ import annotations

import gevent
from kserve_gitops.load import coordinator, openloop, report, tally, workers
from locust.env import Environment
from locust.stats import stats_history

import argparse
import importlib.util
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from kserve_gitops.base import machine
from kserve_gitops.repo import Repo, slo

GRACE_S = 10.0  # how long in-flight requests may take after the last slot
GENERATOR_BUSY_PCT = 80.0  # above this share of one core, warn that Locust may be the limit


class _QuietSpawnWarning(logging.Filter):
    # Users are spawned all at once on purpose: they idle until their slot is due.
    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


logging.getLogger("locust.runners").addFilter(_QuietSpawnWarning())
_locustfile: ModuleType | None = None


@dataclass(frozen=True)
class LoadOptions:
    target: str
    protocol: str
    rate: float
    duration: float  # seconds
    users: int
    model: str
    host_header: str | None = None
    progress_s: float = 5.0  # 0: no progress lines
    workers: int = 0  # Locust worker processes started here (0: one process, no master)
    remote_workers: int = 0  # workers started elsewhere with --worker --master-host
    master_bind_host: str = "127.0.0.1"
    master_port: int = 5557


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    passed: bool
    report_dir: Path | None
    totals: tally.Totals  # the merged histograms and timeline behind the summary


def locustfile(repo: Repo) -> Path:
    return repo.loadtests / "locustfile.py"


def _load_locustfile(repo: Repo) -> ModuleType:
    """Import loadtests/locustfile.py once (its event listeners must register only once)."""
    global _locustfile
    if _locustfile is None:
        spec = importlib.util.spec_from_file_location("kgops_locustfile", locustfile(repo))
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _locustfile = module
    return _locustfile


def _progress(run: coordinator.Coordinator, planned: int, every_s: float, out) -> None:
    """A line every few seconds: elapsed, completed, rate over the interval, p99 so far, errors."""
    last_done, last_t = 0, 0.0
    while True:
        gevent.sleep(every_s)
        now = run.elapsed_s()
        if now <= 0:
            continue
        totals = run.totals(final=False)
        rec = totals.recorder
        rate = (rec.requests - last_done) / (now - last_t) if now > last_t else 0.0
        p99 = rec.scheduled.get_value_at_percentile(99) / 1000 if rec.requests else 0.0
        out(
            f"  {now:6.1f}s  done {rec.requests:>6}/{planned}"
            f"  rate {rate:7.1f}/s  p99 {p99:8.2f} ms  errors {totals.errors}"
        )
        last_done, last_t = rec.requests, now


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


def run_load(
    repo: Repo,
    opts: LoadOptions,
    targets: slo.Targets,
    *,
    env_name: str | None = None,
    slo_source: str = "",
    report_root: Path | None = None,
    out=print,
) -> RunResult:
    """One open-loop run; writes reports under report_root/<timestamp>/ unless it is None.

    With opts.workers or opts.remote_workers, this process is the Locust master and the plan
    is shared among the workers (kserve_gitops.load.coordinator)."""
    module = _load_locustfile(repo)
    user_class = module.V1User if opts.protocol == "v1" else module.V2User
    expected = opts.workers + opts.remote_workers
    planned = max(1, round(opts.rate * opts.duration))
    # All users spawn at once; slot 0 is due once they are up (and, distributed, once every
    # worker has its share of the plan).
    lead_s = (1.5 if expected else 0.3) + opts.users / 1000
    spec = coordinator.RunSpec(opts.rate, planned, lead_s, opts.model, opts.host_header)

    # A fresh Events per run (the default): every runner adds its stats listener to the
    # environment's hooks, and on the shared locust.events they would pile up run after run.
    env = Environment(user_classes=[user_class], host=opts.target, locustfile=str(locustfile(repo)))
    env.kgops_repo = repo  # the locustfile's users read their payloads from it
    host = f" (Host: {opts.host_header})" if opts.host_header else ""
    spread = f", {expected} worker processes" if expected else ""
    out(
        f"load: {opts.protocol} {opts.target}{host} at {opts.rate:g} req/s for"
        f" {opts.duration:g}s ({planned} requests, {opts.users} users{spread})"
    )
    pool: workers.LocalWorkers | None = None
    if expected:
        runner = env.create_master_runner(opts.master_bind_host, opts.master_port)
        pool = workers.LocalWorkers(repo, locustfile(repo), opts.master_port, opts.workers)
    else:
        runner = env.create_local_runner()
    run = coordinator.install(env, lambda: spec)
    assert run is not None
    started_at, cpu_before = time.time(), coordinator.cpu_s()
    reports: report.ReportDir | None = None
    helpers: list[gevent.Greenlet] = []
    try:
        if pool is not None:
            pool.start()
            pool.wait_for(runner, expected, out=out)
        reports = report.ReportDir(report_root, env) if report_root is not None else None
        helpers.append(gevent.spawn(stats_history, runner))
        if opts.progress_s > 0:
            helpers.append(gevent.spawn(_progress, run, planned, opts.progress_s, out))
        runner.start(opts.users, spawn_rate=opts.users, wait=False)
        if not run.done.wait(timeout=lead_s + opts.duration + GRACE_S):
            out(f"deadline: the plan did not finish within {GRACE_S:g}s after its last slot")
        # Stopping drains what is left (a bounded plan gets 1 s more); workers get the quit.
        runner.quit()
        totals = run.totals(final=True)
    except BaseException:  # Ctrl-C included: no half-written report directory
        if reports is not None:
            reports.abort()
        runner.quit()
        raise
    finally:
        used, wall = coordinator.cpu_s() - cpu_before, time.time() - started_at
        gevent.killall(helpers)
        if pool is not None:
            pool.stop()
            runner.server.close(linger=0)  # free the port for the next run in this process
    finished_at = time.time()
    for lost in totals.lost:
        out(
            f"warning: worker {lost['source']} (share {lost['index'] + 1} of {lost['of']}) was"
            f" lost: {lost['unsent']} of its slots were never answered and count as errors"
        )
    generator = generator_figures(totals, used, wall, distributed=bool(expected))
    summary = build_summary(
        repo,
        opts,
        targets,
        totals,
        env,
        env_name=env_name,
        slo_source=slo_source,
        started_at=started_at,
        finished_at=finished_at,
        generator=generator,
    )
    passed = summary["verdict"] == "PASS"
    if generator["cpu_percent_of_one_core"] > GENERATOR_BUSY_PCT:
        out(
            f"warning: a load generator process used {generator['cpu_percent_of_one_core']:.0f}%"
            " of a core: it may be the bottleneck (more --workers, or workers on other machines)"
        )
    report_dir = None
    if reports is not None:
        report_dir = reports.finish(env, summary)
    return RunResult(summary=summary, passed=passed, report_dir=report_dir, totals=totals)


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
        "model": opts.model,
        "protocol": opts.protocol,
        "load": {
            "mode": "open loop, fixed arrival rate",
            "rate_rps": opts.rate,
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


def _parser(repo: Repo) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgops loadtest", description=__doc__)
    p.add_argument("--target", default="http://127.0.0.1:8080", help="base URL of the server")
    p.add_argument("--host-header", help="Host header, e.g. an InferenceService host via ingress")
    p.add_argument("--protocol", choices=("v1", "v2"), help="default from the SLO config")
    p.add_argument("--rate", type=float, help="arrival rate, req/s (default from the SLO config)")
    p.add_argument("--duration", help="e.g. 30s or 2m (default from the SLO config)")
    p.add_argument("--users", type=int, help="concurrent users (default: max(16, rate/2))")
    p.add_argument("--model", help="(default: the checkout's only model)")
    p.add_argument("--env", choices=repo.environment_names, help="apply this env's SLO overrides")
    p.add_argument("--slo-config", type=Path, help="default config/slo.yaml")
    p.add_argument("--reports", type=Path, help="report root (default reports/)")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--ui", action="store_true", help="Locust web dashboard instead of a run")
    p.add_argument("--web-port", type=int, default=8089)
    dist = p.add_argument_group("distributed load (this process is the Locust master)")
    dist.add_argument("--workers", type=int, default=0, help="worker processes on this machine")
    dist.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="also wait for this many workers from other machines (--worker --master-host)",
    )
    dist.add_argument(
        "--master-bind-host",
        help="interface workers connect to (default 127.0.0.1; * with --remote-workers)",
    )
    dist.add_argument("--master-port", type=int, default=5557)
    dist.add_argument(
        "--worker", action="store_true", help="be a worker of the master at --master-host"
    )
    dist.add_argument("--master-host", default="127.0.0.1", help="the master, for --worker")
    return p


def _ui(
    repo: Repo, opts: LoadOptions, web_port: int, env_name: str | None, args: argparse.Namespace
) -> int:
    """Replace this process with the Locust dashboard, load settings as its defaults."""
    env = {
        **os.environ,
        "KGOPS_ROOT": str(repo.root),
        "KGOPS_RATE": str(opts.rate),
        "KGOPS_MODEL": opts.model,
    }
    for key, value in (
        ("KGOPS_HOST_HEADER", opts.host_header),
        ("KGOPS_ENV", env_name),
        ("KGOPS_SLO_CONFIG", args.slo_config and str(args.slo_config.resolve())),
        ("KGOPS_REPORTS", args.reports and str(args.reports.resolve())),
    ):
        if value:
            env[key] = value
    user_class = "V1User" if opts.protocol == "v1" else "V2User"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile(repo)),
        "--host",
        opts.target,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        "--users",
        str(opts.users),
        "--spawn-rate",
        str(opts.users),
    ]
    if opts.workers or opts.remote_workers:
        cmd += ["--master-bind-host", opts.master_bind_host]
        # The forked workers connect to --master-port, the master listens on --master-bind-port.
        cmd += ["--master-bind-port", str(opts.master_port), "--master-port", str(opts.master_port)]
        # --processes forks the local workers; a master alone waits for remote ones.
        cmd += ["--processes", str(opts.workers)] if opts.workers else ["--master"]
    spread = f", {opts.workers} local worker processes" if opts.workers else ""
    print(
        f"Locust dashboard: http://127.0.0.1:{web_port}  ({opts.rate:g} req/s open loop{spread};"
        " SLO tab)"
    )
    sys.stdout.flush()
    os.execve(sys.executable, [*cmd, user_class], env)


def _worker(repo: Repo, master_host: str, master_port: int) -> int:
    """Replace this process with a Locust worker; the master sends it its share of the plan."""
    print(f"Locust worker of {master_host}:{master_port}")
    sys.stdout.flush()
    os.execve(
        sys.executable,
        workers.command(locustfile(repo), master_host, master_port),
        {**os.environ, "KGOPS_ROOT": str(repo.root)},
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    args = _parser(repo).parse_args(argv)
    if args.worker:
        return _worker(repo, args.master_host, args.master_port)
    try:
        config = slo.for_run(
            repo,
            args.env,
            args.slo_config,
            args.rate,
            args.duration,
            protocol=args.protocol,
            users=args.users,
        )
    except slo.SloConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if urlparse(args.target).scheme not in ("http", "https"):
        print(f"error: --target {args.target!r}: expected an http(s):// URL", file=sys.stderr)
        return 2
    if args.workers < 0 or args.remote_workers < 0:
        print("error: --workers, --remote-workers: expected 0 or more", file=sys.stderr)
        return 2
    load = config.load
    opts = LoadOptions(
        target=args.target,
        protocol=load.protocol,
        rate=load.rate,
        duration=load.duration,
        users=load.users or openloop.default_users(load.rate),
        host_header=args.host_header,
        model=args.model or repo.default_model(),
        progress_s=args.progress,
        workers=args.workers,
        remote_workers=args.remote_workers,
        master_bind_host=args.master_bind_host or ("*" if args.remote_workers else "127.0.0.1"),
        master_port=args.master_port,
    )
    if args.ui:
        return _ui(repo, opts, args.web_port, args.env, args)
    try:
        result = run_load(
            repo,
            opts,
            config.targets,
            env_name=args.env,
            slo_source=config.source,
            report_root=args.reports or repo.reports,
        )
    except workers.WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"SLO verdict ({config.source}{', env ' + args.env if args.env else ''}):")
    print(slo.verdict_table([slo.Check(**c) for c in result.summary["checks"]]))
    print(f"{result.summary['verdict']}  report: {repo.rel(result.report_dir)}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
