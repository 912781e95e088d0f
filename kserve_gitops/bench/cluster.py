"""The cluster-path benchmark: the Locust open-loop test of config/slo.yaml (80 req/s) against
sklearn-iris served locally, through the real node's revision Service (kube-proxy, queue-proxy),
through `kubectl port-forward` to the predictor pod and through Knative's activator, in
interleaved rounds (kserve_gitops.bench.rounds); then KServe's table (rates 5, 50, 500 per
cluster path) and the highest rate each path sustains (kserve_gitops.base.ratesearch), cold
starts from zero pods (kserve_gitops.bench.cluster_rates), and the scale-out under a rising load
(kserve_gitops.bench.scaleout); into benchmarks/cluster-path.json, .md (cluster_report) and the
plots beside it (cluster_plots), with the machine it ran on and what the environment declares
(kserve_gitops.bench.autoscaling).

    kgops bench-cluster --env dev   # make bench-cluster: its own real-node e2e (the platform and
                                    # the model), the measurements, then the cluster stopped
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kserve_gitops.base import machine, ratesearch
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.bench import (
    autoscaling,
    cluster_plots,
    cluster_rates,
    cluster_report,
    rounds,
    scaleout,
)
from kserve_gitops.e2e import plan as e2e_plan
from kserve_gitops.e2e import run as e2e_run
from kserve_gitops.e2e.executor import Executor
from kserve_gitops.e2e.paths import PathError
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError
from kserve_gitops.repo.slo import load_slo
from kserve_gitops.serving import process

ROWS = ((5.1, 3.5, 1.4, 0.2),)
# What the real node needs on the host (make node-tools), besides root.
NODE_TOOLS = ("iptables", "conntrack", "ipset")


@dataclass(frozen=True)
class Setup:
    """What the command line and the environment ask for, checked before any cluster starts."""

    rates: list[float]  # KServe's table
    searched: list[str]  # the paths whose highest rate is searched
    ramp: scaleout.Ramp
    declared: autoscaling.Autoscaling


def setup(repo: Repo, args: argparse.Namespace) -> Setup:
    """Raises ValueError (or RenderError: a manifest that does not render) on what would
    otherwise fail only after the e2e built the cluster."""
    searched = [p.strip() for p in args.max_rate_paths.split(",") if p.strip()]
    unknown = sorted(set(searched) - set(cluster_report.RATE_PATHS))
    if unknown:
        raise ValueError(f"--max-rate-paths {','.join(unknown)}: not a cluster path")
    first, _, last = args.scaleout_rates.partition(",")
    return Setup(
        rates=[float(r) for r in args.rates.split(",") if r.strip()],
        searched=searched,
        ramp=scaleout.Ramp(float(first), float(last or "nan"), args.scaleout_seconds),
        declared=autoscaling.read(repo, args.env, repo.default_model()),
    )


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()


def not_run_reason() -> str | None:
    """Why this machine cannot run the real node now (None: it can)."""
    if os.geteuid() != 0:
        return "not root (the real node's kubelet and containerd need root)"
    missing = [t for t in NODE_TOOLS if shutil.which(t) is None]
    if missing:
        return f"node tools missing: {', '.join(missing)} (make node-tools)"
    return None


def run_cluster(repo: Repo, env: str) -> str | None:
    """`kgops bench --cluster`: this benchmark in a process of its own (`kgops bench` has
    imported Locust, whose gevent monkey-patching the e2e's threads and subprocesses must not run
    under). None when it ran, else why not."""
    reason = not_run_reason()
    if reason is None:
        argv = [sys.executable, "-m", "kserve_gitops.bench.cluster", "--env", env]
        code = subprocess.run(argv, cwd=repo.root, check=False).returncode
        reason = f"`kgops bench-cluster --env {env}` failed (exit {code})" if code else None
    if reason:
        print(f"cluster part not run: {reason}")
    return reason


def measure_load(
    repo: Repo, runner: Runner, target: Target, env: str, rate: float, duration: float, model: str
) -> rounds.Measurement:
    """One open-loop run of `duration` seconds at `rate`: latency figures, throughput and the
    load test's own CPU."""
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
            f"{rate:g}",
            "--duration",
            f"{duration:g}s",
            "--reports",
            tmp,
            *(arg for name, value in target.headers for arg in ("--header", f"{name}: {value}")),
        ]
        # A missed SLO exits 1; the figures still say what happened.
        with contextlib.suppress(CommandError):
            runner.run(argv, timeout=duration + 300, quiet=True)
        found = sorted(Path(tmp).glob("*/summary.json"))
        if not found:
            raise PathError(f"{target.name}: the load test wrote no summary")
        summary = json.loads(found[-1].read_text())
    return measurement(summary)


def measurement(summary: dict[str, Any]) -> rounds.Measurement:
    """A load test's summary.json as the figures the tables compare."""
    latency = summary["latency_ms"]
    metrics = {f"{k}_ms": float(latency[k]) for k in (*cluster_report.FIGURES, "p95")}
    metrics["rps"] = float(summary["throughput_rps"])
    requests = summary["requests"]
    # Unfinished requests (in flight at the end, or never sent) count as errors, as in the search.
    errors = requests["failures"] + requests["unfinished"]
    metrics["errors"] = float(errors)
    metrics["success_pct"] = 100.0 * (
        1 - errors / max(requests["completed"] + requests["unfinished"], 1)
    )
    # Every generator process (one without --workers), as % of one core over the run.
    processes = summary["generator"]["processes"]
    metrics["generator_cpu_pct"] = sum(p["cpu_percent_of_one_core"] for p in processes)
    return rounds.Measurement(metrics, {"verdict": summary["verdict"]})


def search_point(rate: float, m: rounds.Measurement) -> ratesearch.Point:
    """A cluster measurement in the shape ratesearch.passes reads."""
    f = m.metrics
    return {
        "rate": rate,
        "achieved_rps": f["rps"],
        "latency_ms": {k: f[f"{k}_ms"] for k in ("avg", "p50", "p95", "p99", "max")},
        "errors": int(f["errors"]),
        "success_pct": f["success_pct"],
        "generator_cpu_pct": f["generator_cpu_pct"],
    }


# The e2e layers the benchmark needs: the platform and the model, not the verification.
SKIPPED_LAYERS = {"verify", "reliability", "canary"}


def parser(repo: Repo) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgops bench-cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="dev", choices=repo.environment_names)
    p.add_argument("--rounds", type=int, default=rounds.DEFAULT_ROUNDS)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per path and round")
    p.add_argument("--out", type=Path, default=repo.root / "benchmarks" / "cluster-path.md")
    p.add_argument("--rates", default="5,50,500", help="KServe's table: rates per path ('': none)")
    p.add_argument("--rate-rounds", type=int, default=3, help="rounds of the rate table")
    p.add_argument("--rate-duration", type=float, default=15.0, help="seconds per rate")
    p.add_argument(
        "--max-rate-paths",
        default="service,activator",
        help="cluster paths whose highest sustained rate is searched ('': none)",
    )
    p.add_argument("--max-rate-start", type=float, default=100.0, help="the search's first rate")
    p.add_argument("--max-rate-ceiling", type=float, default=3200.0, help="its highest rate")
    p.add_argument("--max-rate-step", type=float, default=10.0, help="seconds per search step")
    p.add_argument("--cold-starts", type=int, default=5, help="cold starts from zero pods")
    p.add_argument(
        "--scaleout-path",
        default="activator",
        choices=("activator", "service", "none"),
        help="the path of the scale-out ramp (none: skip it)",
    )
    p.add_argument(
        "--scaleout-rates",
        default="10,400",
        metavar="FROM,TO",
        help="the ramp's first and last rate, req/s",
    )
    p.add_argument("--scaleout-seconds", type=float, default=120.0, help="the ramp's length")
    p.add_argument(
        "--from-record",
        action="store_true",
        help="measure nothing: redraw the plots and the markdown from --out's .json record",
    )
    return p


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    args = parser(repo).parse_args(argv)
    if args.from_record:
        record = args.out.with_suffix(".json")
        try:
            doc = json.loads(record.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {record}: {exc}", file=sys.stderr)
            return 2
        print(publish(doc, args.out))
        return 0
    try:
        checked = setup(repo, args)
    except (ValueError, RenderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    full = e2e_plan.build(repo, args.env, "node")
    layers = {s.layer for s in full.steps} - SKIPPED_LAYERS - {"cluster", "check"}
    plan = e2e_plan.build(repo, args.env, "node", layers)
    # The measurement runs inside the e2e, while its controllers (the KServe webhook that every
    # new predictor pod passes) still run: a kept cluster has none, so no cold start.
    return e2e_run.run(plan, False, repo.reports, then=lambda ex: measure(repo, ex, args, checked))


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def measure(
    repo: Repo,
    executor: Executor,
    args: argparse.Namespace,
    checked: Setup,
) -> None:
    """The SLO-rate rounds per path, KServe's table, the highest rates, the cold starts and the
    scale-out, into `args.out` (.json, .md) and the plots beside it."""
    slo = load_slo(repo, args.env)
    model = repo.default_model()
    runner, paths = executor.runner, executor.paths
    namespace = executor.plan.namespace
    knobs = ratesearch.Knobs(
        step_s=args.max_rate_step, start_rate=args.max_rate_start, max_rate=args.max_rate_ceiling
    )
    local = process.start_background(repo, model_name=model, timeout=120)
    try:
        targets = {"local": Target("local", local.url)}
        for path in cluster_report.SLO_PATHS[1:]:
            url = paths.open(model, namespace, path)
            targets[path] = Target(path, url, tuple(paths.headers.get(path, {}).items()))

        def load(target: Target, rate: float, seconds: float) -> rounds.Measurement:
            return measure_load(repo, runner, target, args.env, rate, seconds, model)

        result = rounds.run(
            [targets[p] for p in cluster_report.SLO_PATHS],
            lambda t, _n: load(t, slo.load.rate, args.duration),
            args.rounds,
            name=lambda t: t.name,
            log=_log,
        )
        points = [
            cluster_rates.RatePoint(p, targets[p].url, r)
            for r in checked.rates
            for p in cluster_report.RATE_PATHS
        ]
        by_rate = (
            rounds.run(
                points,
                lambda p, _n: load(targets[p.path], p.rate, args.rate_duration),
                args.rate_rounds,
                name=lambda p: p.name,
                log=_log,
            )
            if points
            else None
        )
        maxima = {}
        for path in checked.searched:
            _log(f"highest rate through {path}")
            best, steps = ratesearch.search(
                lambda rate, s, t=targets[path]: search_point(rate, load(t, rate, s)), knobs, _log
            )
            maxima[path] = {"max": best, "steps": steps}
        paths.close()  # no keep-alive: the revision must be free to scale to zero
        starts = cluster_rates.cold_starts(
            paths, model, namespace, ROWS, args.cold_starts, 300, _log
        )
        rising = None
        if args.scaleout_path != "none":
            rising = scaleout.run(
                paths, model, namespace, args.scaleout_path, checked.ramp, ROWS, 60.0, _log
            )
    finally:
        paths.close()
        local.stop()
    doc = {
        "meta": {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": args.rounds,
            "duration": args.duration,
            "rate": slo.load.rate,
            "rate_rounds": args.rate_rounds,
            "rate_duration": args.rate_duration,
            "env": args.env,
            "machine": machine.machine(),
            "load_start": ", ".join(f"{x:.2f}" for x in result.load_average_start),
            "load_end": ", ".join(f"{x:.2f}" for x in result.load_average_end),
        },
        "records": [r.__dict__ for r in result.records],
        "rate_records": [r.__dict__ for r in by_rate.records] if by_rate else [],
        "knobs": asdict(knobs),
        "maxima": maxima,
        "cold_starts": starts,
        "autoscaling": checked.declared.to_json(),
        "scaleout": rising,
    }
    print(publish(doc, args.out))


def publish(doc: dict[str, Any], out: Path) -> str:
    """The record first (a report that fails to render loses no measurement), then the plots
    and the markdown beside it; returns the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    draw(doc, out.parent)
    text = cluster_report.markdown(doc)
    out.write_text(text)
    return text


def draw(doc: dict[str, Any], folder: Path) -> None:
    """The plots the record has data for, under their names in cluster_report.PLOTS."""
    names = cluster_report.PLOTS
    if doc.get("rate_records") or doc.get("maxima"):
        result = rounds.Rounds(order=[], records=[rounds.Record(**r) for r in doc["rate_records"]])
        points = [(p.path, p.rate) for p in cluster_report.rate_points(result)]
        cluster_plots.rates(result, points, doc.get("maxima") or {}, folder / names["rates"])
    if doc.get("cold_starts"):
        cluster_plots.cold_starts(doc["cold_starts"], folder / names["cold_starts"])
    if doc.get("scaleout") and doc.get("autoscaling"):
        cluster_plots.scaleout(doc["scaleout"], doc["autoscaling"], folder / names["scaleout"])


if __name__ == "__main__":
    raise SystemExit(main())
