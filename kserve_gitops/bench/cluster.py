"""The cluster-path benchmark, in parts (--parts): `slo`, the Locust open-loop test of
config/slo.yaml (80 req/s) against sklearn-iris served locally, through the real node's revision
Service (kube-proxy, queue-proxy), through `kubectl port-forward` to the predictor pod and
through Knative's activator, in interleaved rounds (kserve_gitops.bench.rounds); `rates`,
KServe's table (rates 5, 50, 500 per cluster path); `max`, the highest rate each path sustains
(kserve_gitops.base.ratesearch); `cold`, cold starts from zero pods
(kserve_gitops.bench.cluster_rates); `scaleout`, the scale-out under a rising load
(kserve_gitops.bench.scaleout). By default every part the environment's configuration allows
(kserve_gitops.bench.autoscaling: no cold start with minReplicas > 0, no scale-out when
maxReplicas allows no pod beyond the first); into benchmarks/cluster-path.json, .md
(cluster_report) and the plots beside it (cluster_plots), with the machine it ran on and what
the environment declares.

    kgops bench-cluster --env dev   # its own real-node e2e (the platform and the model), the
                                    # measurements, then the cluster stopped
    kgops bench-cluster --env staging --parts scaleout --out benchmarks/cluster-scaleout.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kserve_gitops.base import machine, ratesearch
from kserve_gitops.base.arrivals import Arrivals
from kserve_gitops.base.tools import Runner
from kserve_gitops.bench import (
    autoscaling,
    cluster_load,
    cluster_plots,
    cluster_rates,
    cluster_report,
    rounds,
    scaleout,
)
from kserve_gitops.bench.cluster_load import Target
from kserve_gitops.e2e import plan as e2e_plan
from kserve_gitops.e2e import run as e2e_run
from kserve_gitops.e2e.executor import Executor
from kserve_gitops.e2e.steps import Plan
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError
from kserve_gitops.repo.slo import load_slo
from kserve_gitops.serving import process

ROWS = ((5.1, 3.5, 1.4, 0.2),)
# What the real node needs on the host (make node-tools), besides root.
NODE_TOOLS = ("iptables", "conntrack", "ipset")


# The parts of the benchmark, in the order they run (--parts): the SLO-rate rounds per path,
# KServe's rate table, the highest rates, the cold starts, the scale-out ramp.
PARTS = ("slo", "rates", "max", "cold", "scaleout")


@dataclass(frozen=True)
class Setup:
    """What the command line and the environment ask for, checked before any cluster starts."""

    parts: list[str]
    rates: list[float]  # KServe's table
    searched: list[str]  # the paths whose highest rate is searched
    ramp: Arrivals
    declared: autoscaling.Autoscaling


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def choose_parts(args: argparse.Namespace, refused: dict[str, str]) -> list[str]:
    """--parts as asked (a part the environment cannot do is refused), else every part it
    allows but those of --without."""
    asked, without = _names(args.parts), _names(args.without)
    unknown = sorted(set(asked + without) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts/--without {','.join(unknown)}: not a part ({','.join(PARTS)})")
    if asked and without:
        raise ValueError("--parts and --without exclude each other")
    for part in asked:
        if part in refused:
            raise ValueError(f"--parts {part}: {refused[part]}")
    if asked:
        return [p for p in PARTS if p in asked]
    for part, why in refused.items():
        _log(f"part {part} left out: {why}")
    left = [p for p in PARTS if p not in refused and p not in without]
    if not left:
        raise ValueError(f"--without {args.without}: no part left that {args.env} allows")
    return left


def setup(repo: Repo, args: argparse.Namespace) -> Setup:
    """Raises ValueError (or RenderError: a manifest that does not render) on what would
    otherwise fail only after the e2e built the cluster."""
    declared = autoscaling.read(repo, args.env, repo.default_model())
    parts = choose_parts(args, declared.refusals())
    searched = _names(args.max_rate_paths)
    unknown = sorted(set(searched) - set(cluster_report.RATE_PATHS))
    if unknown:
        raise ValueError(f"--max-rate-paths {','.join(unknown)}: not a cluster path")
    rates = [float(r) for r in _names(args.rates)]
    for part, given, option in (("rates", rates, "--rates"), ("max", searched, "--max-rate-paths")):
        if part in parts and not given:
            raise ValueError(f"{option}: none given for part {part} (leave it out with --parts)")
    if "cold" in parts and args.cold_starts < 1:
        raise ValueError("--cold-starts: expected 1 or more (leave the part out with --parts)")
    first, _, last = args.scaleout_rates.partition(",")
    return Setup(
        parts=parts,
        rates=rates,
        searched=searched,
        ramp=scaleout.ramp(float(first), float(last or "nan"), args.scaleout_seconds),
        declared=declared,
    )


def not_run_reason() -> str | None:
    """Why this machine cannot run the real node now (None: it can)."""
    if os.geteuid() != 0:
        return "not root (the real node's kubelet and containerd need root)"
    missing = [t for t in NODE_TOOLS if shutil.which(t) is None]
    if missing:
        return f"node tools missing: {', '.join(missing)} (make node-tools)"
    return None


# `kgops bench --cluster` and `make bench-cluster`: the scale-out in an environment of its own.
SCALEOUT_OUT = Path("benchmarks") / "cluster-scaleout.md"


def runs(env: str, scaleout_env: str) -> list[list[str]]:
    """The bench-cluster runs of `make bench-cluster`: `env`'s parts, then, with `scaleout_env`,
    that environment's scale-out into its own record (dev declares maxReplicas 1)."""
    if not scaleout_env:
        return [["--env", env]]
    return [
        ["--env", env, "--without", "scaleout"],
        ["--env", scaleout_env, "--parts", "scaleout", "--out", str(SCALEOUT_OUT)],
    ]


def run_cluster(repo: Repo, env: str, scaleout_env: str) -> str | None:
    """`kgops bench --cluster`: this benchmark's runs in processes of their own (`kgops bench`
    has imported Locust, whose gevent monkey-patching the e2e's threads and subprocesses must not
    run under). None when they ran, else why not."""
    reason = not_run_reason()
    if reason is None:
        failed = []
        for args in runs(env, scaleout_env):
            argv = [sys.executable, "-m", "kserve_gitops.bench.cluster", *args]
            code = subprocess.run(argv, cwd=repo.root, check=False).returncode
            if code:
                failed.append(f"`kgops bench-cluster {' '.join(args)}` failed (exit {code})")
        reason = "; ".join(failed) or None
    if reason:
        print(f"cluster part not run: {reason}")
    return reason


def measure_load(
    runner: Runner, target: Target, env: str, rate: float, duration: float, model: str
) -> rounds.Measurement:
    """One open-loop run of `duration` seconds at `rate`: latency figures, throughput and the
    load test's own CPU."""
    return measurement(cluster_load.summary(runner, target, env, Arrivals(rate), duration, model))


def measurement(doc: dict[str, Any]) -> rounds.Measurement:
    """A load test's summary.json as the figures the tables compare."""
    latency = doc["latency_ms"]
    metrics = {f"{k}_ms": float(latency[k]) for k in (*cluster_report.FIGURES, "p95")}
    metrics["rps"] = float(doc["throughput_rps"])
    requests = doc["requests"]
    # Unfinished requests (in flight at the end, or never sent) count as errors, as in the search.
    errors = requests["failures"] + requests["unfinished"]
    metrics["errors"] = float(errors)
    metrics["success_pct"] = 100.0 * (
        1 - errors / max(requests["completed"] + requests["unfinished"], 1)
    )
    metrics["generator_cpu_pct"] = cluster_load.generator_cpu_pct(doc)
    return rounds.Measurement(metrics, {"verdict": doc["verdict"]})


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
    p.add_argument(
        "--parts",
        default="",
        metavar="P[,P...]",
        help=f"what to measure, of {','.join(PARTS)} (default: all that --env allows)",
    )
    p.add_argument("--without", default="", metavar="P[,P...]", help="the default but these")
    p.add_argument("--rounds", type=int, default=rounds.DEFAULT_ROUNDS)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per path and round")
    p.add_argument("--out", type=Path, default=repo.root / "benchmarks" / "cluster-path.md")
    p.add_argument("--rates", default="5,50,500", help="KServe's table: rates per path")
    p.add_argument("--rate-rounds", type=int, default=3, help="rounds of the rate table")
    p.add_argument("--rate-duration", type=float, default=15.0, help="seconds per rate")
    p.add_argument(
        "--max-rate-paths",
        default="service,activator",
        help="cluster paths whose highest sustained rate is searched",
    )
    p.add_argument("--max-rate-start", type=float, default=100.0, help="the search's first rate")
    p.add_argument("--max-rate-ceiling", type=float, default=3200.0, help="its highest rate")
    p.add_argument("--max-rate-step", type=float, default=10.0, help="seconds per search step")
    p.add_argument("--cold-starts", type=int, default=5, help="cold starts from zero pods")
    p.add_argument(
        "--scaleout-path",
        default="activator",
        choices=("activator", "service"),
        help="the path of the scale-out ramp",
    )
    p.add_argument(
        "--scaleout-rates",
        default="10,400",
        metavar="FROM,TO",
        help="the ramp's first and last rate, req/s",
    )
    p.add_argument("--scaleout-seconds", type=float, default=120.0, help="the ramp's length")
    p.add_argument(
        "--scaleout-workers", type=int, default=2, help="Locust worker processes of the ramp"
    )
    p.add_argument(
        "--from-record",
        action="store_true",
        help="measure nothing: redraw the plots and the markdown from --out's .json record",
    )
    return p


def node_plan(repo: Repo, env: str) -> Plan:
    """The real-node e2e of `env` with the layers the benchmark needs, built as for any
    environment (`kgops e2e --cluster node`'s plan, less the verification)."""
    full = e2e_plan.build(repo, env, "node")
    layers = {s.layer for s in full.steps} - SKIPPED_LAYERS - {"cluster", "check"}
    return e2e_plan.build(repo, env, "node", layers)


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
    plan = node_plan(repo, args.env)
    # The measurement runs inside the e2e, while its controllers (the KServe webhook that every
    # new predictor pod passes) still run: a kept cluster has none, so no cold start.
    return e2e_run.run(plan, False, repo.reports, then=lambda ex: measure(repo, ex, args, checked))


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def opened(checked: Setup) -> list[str]:
    """The cluster paths the chosen parts load, in RATE_PATHS order: the Service before
    port-forward, whose keep-alive goes through it (else dev's revision scales to zero)."""
    wanted = set(cluster_report.RATE_PATHS) if {"slo", "rates"} & set(checked.parts) else set()
    wanted |= set(checked.searched) if "max" in checked.parts else set()
    wanted |= {"service"} if "port-forward" in wanted else set()
    return [p for p in cluster_report.RATE_PATHS if p in wanted]


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(
    repo: Repo,
    executor: Executor,
    args: argparse.Namespace,
    checked: Setup,
) -> None:
    """The chosen parts (checked.parts), into `args.out` (.json, .md) and the plots beside it;
    the record has the machine, its load average and what the environment declares whatever
    the parts, and only the parts measured."""
    model, parts = repo.default_model(), checked.parts
    runner, paths = executor.runner, executor.paths
    namespace = executor.plan.namespace
    meta: dict[str, Any] = {"env": args.env, "parts": parts, "load_start": _load_average()}
    doc: dict[str, Any] = {"meta": meta, "autoscaling": checked.declared.to_json()}
    local = (
        process.start_background(repo, model_name=model, timeout=120) if "slo" in parts else None
    )
    try:
        targets = {"local": Target("local", local.url)} if local else {}
        for path in opened(checked):
            url = paths.open(model, namespace, path)
            targets[path] = Target(path, url, tuple(paths.headers.get(path, {}).items()))

        def load(target: Target, rate: float, seconds: float) -> rounds.Measurement:
            return measure_load(runner, target, args.env, rate, seconds, model)

        if "slo" in parts:
            rate = load_slo(repo, args.env).load.rate
            result = rounds.run(
                [targets[p] for p in cluster_report.SLO_PATHS],
                lambda t, _n: load(t, rate, args.duration),
                args.rounds,
                name=lambda t: t.name,
                log=_log,
            )
            meta |= {"rounds": args.rounds, "duration": args.duration, "rate": rate}
            doc["records"] = [r.__dict__ for r in result.records]
        if "rates" in parts:
            by_rate = rounds.run(
                [
                    cluster_rates.RatePoint(p, targets[p].url, r)
                    for r in checked.rates
                    for p in cluster_report.RATE_PATHS
                ],
                lambda p, _n: load(targets[p.path], p.rate, args.rate_duration),
                args.rate_rounds,
                name=lambda p: p.name,
                log=_log,
            )
            meta |= {"rate_rounds": args.rate_rounds, "rate_duration": args.rate_duration}
            doc["rate_records"] = [r.__dict__ for r in by_rate.records]
        if "max" in parts:
            knobs = ratesearch.Knobs(
                step_s=args.max_rate_step,
                start_rate=args.max_rate_start,
                max_rate=args.max_rate_ceiling,
            )
            doc["knobs"], doc["maxima"] = asdict(knobs), {}
            for path in checked.searched:
                _log(f"highest rate through {path}")
                best, steps = ratesearch.search(
                    lambda r, s, t=targets[path]: search_point(r, load(t, r, s)), knobs, _log
                )
                doc["maxima"][path] = {"max": best, "steps": steps}
        paths.close()  # no keep-alive: the revision must be free to scale to zero
        if "cold" in parts:
            doc["cold_starts"] = cluster_rates.cold_starts(
                paths, model, namespace, ROWS, args.cold_starts, 300, _log
            )
        if "scaleout" in parts:
            doc["scaleout"] = scaleout.run(
                paths,
                runner,
                args.env,
                model,
                namespace,
                args.scaleout_path,
                checked.ramp,
                args.scaleout_workers,
                _log,
            )
    finally:
        paths.close()
        if local:
            local.stop()
    meta |= {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.machine(),
        "load_end": _load_average(),
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
        records = doc.get("rate_records") or []
        result = rounds.Rounds(order=[], records=[rounds.Record(**r) for r in records])
        points = [(p.path, p.rate) for p in cluster_report.rate_points(result)]
        cluster_plots.rates(result, points, doc.get("maxima") or {}, folder / names["rates"])
    if doc.get("cold_starts"):
        cluster_plots.cold_starts(doc["cold_starts"], folder / names["cold_starts"])
    if doc.get("scaleout") and doc.get("autoscaling"):
        cluster_plots.scaleout(doc["scaleout"], doc["autoscaling"], folder / names["scaleout"])


if __name__ == "__main__":
    raise SystemExit(main())
