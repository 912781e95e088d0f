"""Open-loop load test of a prediction endpoint with Locust (as a library) and an SLO verdict.

`python -m kserve_gitops.loadtest --target URL --rate 80 --duration 30s --protocol v1 --env dev`
sends requests at a fixed arrival rate, prints progress, writes reports/<timestamp>/ (Locust CSV
and HTML, summary.json, plot.png), prints the verdict table and exits 1 when a target is missed.
`--ui` runs the Locust dashboard on :8089 against the same locustfile instead.
"""

from __future__ import annotations

# Locust monkey-patches the standard library with gevent on import: import it first.
import locust  # noqa: F401  # isort: skip

import argparse
import importlib.util
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import gevent
import psutil
from locust.env import Environment
from locust.stats import stats_history

from kserve_gitops import openloop, paths, report, slo

LOCUSTFILE = paths.ROOT / "loadtests" / "locustfile.py"
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
    host_header: str | None = None
    model: str = "sklearn-iris"
    progress_s: float = 5.0  # 0: no progress lines


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    passed: bool
    report_dir: Path | None
    plan: openloop.Plan  # the raw histograms and timeline behind the summary


def _load_locustfile() -> ModuleType:
    """Import loadtests/locustfile.py once (its event listeners must register only once)."""
    global _locustfile
    if _locustfile is None:
        spec = importlib.util.spec_from_file_location("kgops_locustfile", LOCUSTFILE)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _locustfile = module
    return _locustfile


def _progress(plan: openloop.Plan, planned: int, every_s: float, out) -> None:
    """A line every few seconds: elapsed, sent, rate over the interval, p99 so far, errors."""
    last_done, last_t = 0, max(plan.now(), 0.0)
    while True:
        gevent.sleep(every_s)
        rec, now = plan.recorder, plan.now()
        if now <= 0:
            continue
        rate = (rec.requests - last_done) / (now - last_t) if now > last_t else 0.0
        p99 = rec.scheduled.get_value_at_percentile(99) / 1000 if rec.requests else 0.0
        out(
            f"  {now:6.1f}s  sent {plan.sent:>6}/{planned}"
            f"  rate {rate:7.1f}/s  p99 {p99:8.2f} ms  errors {rec.failures}"
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


def _versions(opts: LoadOptions) -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    git = subprocess.run(
        ["git", "-C", str(paths.ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "python": platform.python_version(),
        "locust": dist("locust"),
        "hdrhistogram": dist("hdrhistogram"),
        "kserve": dist("kserve"),
        "server": _server_version(opts),
        "git": git.stdout.strip() or None,
    }


def run_load(
    opts: LoadOptions,
    targets: slo.Targets,
    *,
    env_name: str | None = None,
    slo_source: str = "",
    report_root: Path | None = None,
    out=print,
) -> RunResult:
    """One open-loop run; writes reports under report_root/<timestamp>/ unless it is None."""
    module = _load_locustfile()
    # The locustfile reads these from the environment under `locust`; here we set them.
    module.MODEL, module.HOST_HEADER = opts.model, opts.host_header
    user_class = module.V1User if opts.protocol == "v1" else module.V2User

    # A fresh Events per run (the default): every runner adds its stats listener to the
    # environment's hooks, and on the shared locust.events they would pile up run after run.
    env = Environment(user_classes=[user_class], host=opts.target, locustfile=str(LOCUSTFILE))
    runner = env.create_local_runner()
    planned = max(1, round(opts.rate * opts.duration))
    # All users spawn at once; slot 0 is due once they are up.
    plan = openloop.Plan(rate=opts.rate, total=planned, lead_s=0.3 + opts.users / 1000)
    env.kgops_managed, env.kgops_plan = True, plan
    started_at = time.time()
    cpu_before = psutil.Process().cpu_times()
    host = f" (Host: {opts.host_header})" if opts.host_header else ""
    out(
        f"load: {opts.protocol} {opts.target}{host}"
        f" at {opts.rate:g} req/s for {opts.duration:g}s ({planned} requests, {opts.users} users)"
    )
    reports = report.ReportDir(report_root, env) if report_root is not None else None
    helpers = [gevent.spawn(stats_history, runner)]
    if opts.progress_s > 0:
        helpers.append(gevent.spawn(_progress, plan, planned, opts.progress_s, out))
    try:
        runner.start(opts.users, spawn_rate=opts.users, wait=False)
        deadline = plan.t0 - time.perf_counter() + opts.duration + GRACE_S
        if not plan.finished.wait(timeout=deadline):
            plan.stop()
            plan.finished.wait(timeout=1)
    except BaseException:  # Ctrl-C included: no half-written report directory
        if reports is not None:
            reports.abort()
        raise
    finally:
        cpu_after = psutil.Process().cpu_times()
        wall = time.time() - started_at
        runner.quit()
        gevent.killall(helpers)
    finished_at = time.time()
    # Requests still in flight, plus slots never sent because every user was stuck.
    unfinished = (plan.outstanding if not plan.finished.is_set() else 0) + planned - plan.claimed

    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    generator_cpu = 100 * cpu_s / wall
    summary = _summary(
        opts, targets, plan, env, planned=planned, unfinished=unfinished, env_name=env_name,
        slo_source=slo_source, started_at=started_at, finished_at=finished_at,
        generator_cpu=generator_cpu,
    )  # fmt: skip
    passed = all(check["passed"] for check in summary["checks"])
    if generator_cpu > GENERATOR_BUSY_PCT:
        out(
            f"warning: the load generator used {generator_cpu:.0f}% of a core: it may be the"
            " bottleneck (fewer users, or a second machine)"
        )
    report_dir = None
    if reports is not None:
        report_dir = reports.finish(env, summary)
    return RunResult(summary=summary, passed=passed, report_dir=report_dir, plan=plan)


def _summary(
    opts: LoadOptions,
    targets: slo.Targets,
    plan: openloop.Plan,
    env: Environment,
    *,
    planned: int,
    unfinished: int,
    env_name: str | None,
    slo_source: str,
    started_at: float,
    finished_at: float,
    generator_cpu: float,
) -> dict[str, Any]:
    rec = plan.recorder
    latency = openloop.summarize(rec.scheduled, rec.scheduled_sum_us, rec.requests)
    service = openloop.summarize(rec.service, rec.service_sum_us, rec.requests)
    attempted = rec.requests + unfinished
    errors = rec.failures + unfinished
    error_ratio = errors / attempted if attempted else 1.0
    measured = slo.Measured(
        latency_avg_ms=latency["avg"],
        latency_max_ms=latency["max"] if not unfinished else float("inf"),
        latency_p99_ms=latency["p99"],
        throughput_rps=plan.achieved_rate(),
        error_ratio=error_ratio,
    )
    checks = slo.evaluate(targets, measured)
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
            "planned_requests": planned,
            "users": opts.users,
        },
        "requests": {
            "completed": rec.requests,
            "failures": rec.failures,
            "unfinished": unfinished,  # in flight at the deadline or never sent
            "error_ratio": error_ratio,
        },
        "throughput_rps": measured.throughput_rps,
        "latency_ms": {"basis": "from scheduled send time", **latency},
        "service_time_ms": {"basis": "from actual send", **service},
        # Full distributions (microseconds, HdrHistogram.decode) for merging or re-analysis.
        "histograms_us": {
            "scheduled": rec.scheduled.encode().decode(),
            "service": rec.service.encode().decode(),
        },
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
        "generator": {
            "cpu_percent_of_one_core": generator_cpu,
            "cores": psutil.cpu_count(),
            "send_lag_ms": {
                f"p{p}": rec.lag.get_value_at_percentile(p) / 1000 if rec.requests else 0.0
                for p in (50, 99, 100)
            },
        },
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "versions": _versions(opts),
        "timeline": _timeline(plan),
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _timeline(plan: openloop.Plan) -> list[dict[str, float]]:
    """Per second: scheduled-time latency percentiles of the requests due in it, completions."""
    rec = plan.recorder
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kserve_gitops.loadtest", description=__doc__)
    p.add_argument("--target", default="http://127.0.0.1:8080", help="base URL of the server")
    p.add_argument("--host-header", help="Host header, e.g. an InferenceService host via ingress")
    p.add_argument("--protocol", choices=("v1", "v2"), help="default from the SLO config")
    p.add_argument("--rate", type=float, help="arrival rate, req/s (default from the SLO config)")
    p.add_argument("--duration", help="e.g. 30s or 2m (default from the SLO config)")
    p.add_argument("--users", type=int, help="concurrent users (default: max(16, rate/2))")
    p.add_argument("--model", default="sklearn-iris")
    p.add_argument("--env", choices=paths.ENVIRONMENT_NAMES, help="apply this env's SLO overrides")
    p.add_argument("--slo-config", type=Path, help="default config/slo.yaml")
    p.add_argument("--reports", type=Path, help="report root (default reports/)")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--ui", action="store_true", help="Locust web dashboard instead of a run")
    p.add_argument("--web-port", type=int, default=8089)
    return p


def _ui(opts: LoadOptions, web_port: int) -> int:
    """Replace this process with the Locust dashboard, load settings as its defaults."""
    env = {**os.environ, "KGOPS_RATE": str(opts.rate), "KGOPS_MODEL": opts.model}
    if opts.host_header:
        env["KGOPS_HOST_HEADER"] = opts.host_header
    user_class = "V1User" if opts.protocol == "v1" else "V2User"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", opts.target,
        "--web-host", "127.0.0.1", "--web-port", str(web_port),
        "--users", str(opts.users), "--spawn-rate", str(opts.users), user_class,
    ]  # fmt: skip
    print(f"Locust dashboard: http://127.0.0.1:{web_port}  ({opts.rate:g} req/s open loop)")
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = slo.for_run(
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
    load = config.load
    opts = LoadOptions(
        target=args.target,
        protocol=load.protocol,
        rate=load.rate,
        duration=load.duration,
        users=load.users or openloop.default_users(load.rate),
        host_header=args.host_header,
        model=args.model,
        progress_s=args.progress,
    )
    if args.ui:
        return _ui(opts, args.web_port)
    result = run_load(
        opts,
        config.targets,
        env_name=args.env,
        slo_source=config.source,
        report_root=args.reports or paths.REPORTS,
    )
    print()
    print(f"SLO verdict ({config.source}{', env ' + args.env if args.env else ''}):")
    print(slo.verdict_table([slo.Check(**c) for c in result.summary["checks"]]))
    print(f"{result.summary['verdict']}  report: {paths.rel(result.report_dir)}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
