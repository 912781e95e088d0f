"""One headless open-loop run with Locust (as a library): progress lines, the report directory
and the SLO verdict of the summary. With workers this process is the Locust master and the plan
is shared among them (load.coordinator)."""

from __future__ import annotations

import gevent
from kserve_gitops.load import coordinator, report, tally, workers
from kserve_gitops.load.summary import LoadOptions, build_summary, generator_figures
from locust.env import Environment
from locust.stats import stats_history

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

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
    arrivals = opts.arrivals
    planned = arrivals.planned(opts.duration)
    # All users spawn at once; slot 0 is due once they are up (and, distributed, once every
    # worker has its share of the plan).
    lead_s = (1.5 if expected else 0.3) + opts.users / 1000
    spec = coordinator.RunSpec(
        arrivals, planned, lead_s, opts.model, opts.host_header, opts.headers
    )

    # A fresh Events per run (the default): every runner adds its stats listener to the
    # environment's hooks, and on the shared locust.events they would pile up run after run.
    env = Environment(user_classes=[user_class], host=opts.target, locustfile=str(locustfile(repo)))
    env.kgops_repo = repo  # the locustfile's users read their payloads from it
    host = f" (Host: {opts.host_header})" if opts.host_header else ""
    host += "".join(f" ({k}: {v})" for k, v in opts.headers)
    spread = f", {expected} worker processes" if expected else ""
    out(
        f"load: {opts.protocol} {opts.target}{host} at {arrivals.describe()} for"
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
        first_slot_at=run.wall_t0,
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
