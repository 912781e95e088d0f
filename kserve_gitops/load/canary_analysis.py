"""Canary analysis: load-test stable and canary side by side and decide promote, hold or roll back.

    kgops canary-analysis --stable URL --canary URL \
        [--host-header-stable H --host-header-canary H] [--rate R --duration D] [--env ENV]

Both endpoints get the same open-loop load at the same time: two `kserve_gitops.load.loadtest` runs
(the Locust harness of `make loadtest`, same payloads, same rate) started together, each in its
own process so neither one's scheduling stalls the other. In a cluster the endpoints are the
tag URLs (`prev-...` stable, `latest-...` canary); here they can be two local servers.

Decision, from config/canary.yaml and config/slo.yaml (targets of --env):
  roll back  the canary's error ratio exceeds stable's + error_ratio_margin, or its p99 exceeds
             stable's x latency_p99_ratio_max + latency_p99_slack_ms, or it misses an SLO
             target that stable meets (a slow canary is rolled back, not held);
  hold       otherwise, when stable itself misses an SLO target (the baseline cannot judge)
             or either side completed fewer than min_requests;
  promote    otherwise.
Exit 0 promote, 3 hold, 4 roll back; 1 when the load test itself failed, 2 on bad arguments.
Writes reports/<timestamp>-canary/: summary.json, comparison.png and both load-test reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tabulate import tabulate

from kserve_gitops.base import redact
from kserve_gitops.repo import Repo, slo

EXIT = {"promote": 0, "hold": 3, "rollback": 4}
ARMS = ("stable", "canary")
THROUGHPUT_SHARE = 0.9  # the throughput target is capped at this share of the offered rate


@dataclass(frozen=True)
class Rules:
    rate: float
    duration: float
    latency_p99_ratio_max: float
    latency_p99_slack_ms: float
    error_ratio_margin: float
    min_requests: int
    source: str


@dataclass(frozen=True)
class Arm:
    """What one side measured (latencies from the scheduled send time, ms)."""

    name: str
    target: str
    completed: int
    error_ratio: float
    latency_avg_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    throughput_rps: float
    report_dir: str

    def measured(self) -> slo.Measured:
        return slo.Measured(
            latency_avg_ms=self.latency_avg_ms,
            latency_max_ms=self.latency_max_ms,
            latency_p99_ms=self.latency_p99_ms,
            throughput_rps=self.throughput_rps,
            error_ratio=self.error_ratio,
        )


def load_rules(repo: Repo, config: Path | None = None) -> Rules:
    """The rules of `config` (default config/canary.yaml); ValueError naming the file."""
    config = config or repo.config / "canary.yaml"
    doc = slo.load_validated(repo, config, "canary.yaml")
    rel = doc["relative"]
    return Rules(
        rate=float(doc["load"]["rate"]),
        duration=slo.parse_duration(doc["load"]["duration"]),
        latency_p99_ratio_max=float(rel["latency_p99_ratio_max"]),
        latency_p99_slack_ms=float(rel["latency_p99_slack_ms"]),
        error_ratio_margin=float(rel["error_ratio_margin"]),
        min_requests=int(doc["min_requests"]),
        source=repo.rel(config),
    )


def decide(
    stable: Arm, canary: Arm, targets: slo.Targets, rules: Rules
) -> tuple[str, list[str], dict[str, list[dict[str, Any]]]]:
    """(decision, reasons, SLO checks per arm) from the two measurements."""
    checks = {arm.name: slo.evaluate(targets, arm.measured()) for arm in (stable, canary)}
    stable_ok = {c.target: c.passed for c in checks["stable"]}
    rollback: list[str] = []
    p99_limit = stable.latency_p99_ms * rules.latency_p99_ratio_max + rules.latency_p99_slack_ms
    if canary.latency_p99_ms > p99_limit:
        rollback.append(
            f"canary p99 {canary.latency_p99_ms:.2f} ms > {p99_limit:.2f} ms (stable "
            f"{stable.latency_p99_ms:.2f} ms x {rules.latency_p99_ratio_max:g} "
            f"+ {rules.latency_p99_slack_ms:g} ms)"
        )
    error_limit = stable.error_ratio + rules.error_ratio_margin
    if canary.error_ratio > error_limit:
        rollback.append(
            f"canary error ratio {canary.error_ratio:.4f} > {error_limit:.4f} (stable "
            f"{stable.error_ratio:.4f} + {rules.error_ratio_margin:g})"
        )
    for c in checks["canary"]:
        if not c.passed and stable_ok[c.target]:
            rollback.append(f"canary misses the SLO {c.target} {c.threshold} ({c.measured})")
    hold: list[str] = []
    for c in checks["stable"]:
        if not c.passed:
            hold.append(f"stable misses the SLO {c.target} {c.threshold} ({c.measured})")
    for arm in (stable, canary):
        if arm.completed < rules.min_requests:
            hold.append(f"{arm.name} completed {arm.completed} < {rules.min_requests} requests")
    as_dicts = {name: [c.as_dict() for c in cs] for name, cs in checks.items()}
    if rollback:
        return "rollback", rollback, as_dicts
    if hold:
        return "hold", hold, as_dicts
    return "promote", ["canary within the SLO targets and the relative margins"], as_dicts


def _arm(name: str, target: str, summary: dict[str, Any], report_dir: str) -> Arm:
    lat = summary["latency_ms"]
    return Arm(
        name=name,
        target=target,
        completed=int(summary["requests"]["completed"]),
        error_ratio=float(summary["requests"]["error_ratio"]),
        latency_avg_ms=float(lat["avg"]),
        latency_p50_ms=float(lat["p50"]),
        latency_p95_ms=float(lat["p95"]),
        latency_p99_ms=float(lat["p99"]),
        latency_max_ms=float(lat["max"]),
        throughput_rps=float(summary["throughput_rps"]),
        report_dir=report_dir,
    )


def _pump(name: str, stream: Any, out: Any) -> None:
    for line in stream:
        out(f"[{name}] {line.rstrip()}")


def run_side_by_side(
    repo: Repo,
    endpoints: dict[str, tuple[str, str | None]],
    args: list[str],
    workdir: Path,
    out: Any = print,
) -> dict[str, tuple[dict[str, Any], Path]]:
    """Start one loadtest process per arm at once; their summaries and report directories."""
    procs: dict[str, subprocess.Popen[str]] = {}
    pumps = []
    env = {**os.environ, "KGOPS_ROOT": str(repo.root)}
    for name, (url, host) in endpoints.items():
        cmd = [
            sys.executable,
            "-m",
            "kserve_gitops.load.loadtest",
            "--target",
            url,
            "--reports",
            str(workdir / name),
            *args,
            *(["--host-header", host] if host else []),
        ]
        procs[name] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        pump = threading.Thread(target=_pump, args=(name, procs[name].stdout, out), daemon=True)
        pump.start()
        pumps.append(pump)
    results: dict[str, tuple[dict[str, Any], Path]] = {}
    for name, proc in procs.items():
        code = proc.wait()
        dirs = [p for p in (workdir / name).glob("*") if not p.name.startswith(".")]
        if code not in (0, 1) or len(dirs) != 1:  # 1 is an SLO FAIL: still a measurement
            raise RuntimeError(f"the {name} load test failed (exit {code}); see its output above")
        results[name] = (json.loads((dirs[0] / "summary.json").read_text()), dirs[0])
    for pump in pumps:
        pump.join(timeout=5)
    return results


def plot(summary: dict[str, Any], timelines: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Per-second p99 of both arms, and their latency percentiles side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7))
    line, bars = fig.subplots(2, 1)
    colors = {"stable": "tab:blue", "canary": "tab:orange"}
    for name, rows in timelines.items():
        values = [r["p99_ms"] or float("nan") for r in rows]
        line.plot([r["t"] for r in rows], values, label=f"{name} p99", color=colors[name])
    line.set_yscale("log")
    line.set_xlabel("seconds since the first scheduled request")
    line.set_ylabel("p99 per second (ms)")
    line.grid(True, which="both", alpha=0.3)
    line.legend(fontsize=8)
    keys = ("avg", "p50", "p95", "p99", "max")
    width = 0.38
    for i, name in enumerate(ARMS):
        arm = summary["arms"][name]
        vals = [arm[f"latency_{k}_ms"] for k in keys]
        xs = [x + (i - 0.5) * width for x in range(len(keys))]
        label = f"{name}: errors {arm['error_ratio']:.2%}, {arm['completed']} requests"
        bars.bar(xs, vals, width, label=label, color=colors[name])
    bars.set_xticks(range(len(keys)), keys)
    bars.set_yscale("log")
    bars.set_ylabel("latency from scheduled send (ms)")
    bars.grid(True, axis="y", which="both", alpha=0.3)
    bars.legend(fontsize=8)
    fig.suptitle(
        f"canary analysis at {summary['load']['rate_rps']:g} req/s each: "
        f"{summary['decision'].upper()}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _parser(repo: Repo) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgops canary-analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stable", required=True, help="base URL of the stable version")
    p.add_argument("--canary", required=True, help="base URL of the canary")
    p.add_argument("--host-header-stable", help="Host header for the stable (e.g. prev-... tag)")
    p.add_argument("--host-header-canary", help="Host header for the canary (e.g. latest-... tag)")
    p.add_argument("--rate", type=float, help="req/s to EACH endpoint (default: canary config)")
    p.add_argument("--duration", help="e.g. 30s (default: canary config)")
    p.add_argument("--env", choices=repo.environment_names, help="SLO targets of this env")
    p.add_argument("--model", help="(default: the checkout's only model)")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    p.add_argument("--config", type=Path, help="default config/canary.yaml")
    p.add_argument("--slo-config", type=Path, help="default config/slo.yaml")
    p.add_argument("--reports", type=Path, help="report root (default reports/)")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    return p


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    args = _parser(repo).parse_args(argv)
    model = args.model or repo.default_model()
    try:
        rules = load_rules(repo, args.config)
        rate = args.rate if args.rate is not None else rules.rate
        duration = slo.parse_duration(args.duration) if args.duration else rules.duration
        config = slo.load_slo(repo, args.env, config=args.slo_config)
    except (ValueError, slo.SloConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for flag, url in (("--stable", args.stable), ("--canary", args.canary)):
        if urlparse(url).scheme not in ("http", "https"):
            print(f"error: {flag} {url!r}: expected an http(s):// URL", file=sys.stderr)
            return 2
    if rate <= 0:
        print("error: --rate: expected a positive number of requests/s", file=sys.stderr)
        return 2
    targets = replace(
        config.targets,
        throughput_min_rps=min(config.targets.throughput_min_rps, rate * THROUGHPUT_SHARE),
    )
    root = args.reports or repo.reports
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = root / f".tmp-{stamp}-{os.getpid()}-canary"
    work.mkdir()
    load_args = [
        "--rate",
        f"{rate:g}",
        "--duration",
        f"{duration:g}s",
        "--model",
        model,
        "--protocol",
        args.protocol,
        "--progress",
        f"{args.progress:g}",
        *(["--env", args.env] if args.env else []),
        *(["--slo-config", str(args.slo_config)] if args.slo_config else []),
    ]
    endpoints = {
        "stable": (args.stable, args.host_header_stable),
        "canary": (args.canary, args.host_header_canary),
    }
    print(f"canary analysis: {rate:g} req/s for {duration:g}s to each of stable and canary")
    try:
        runs = run_side_by_side(repo, endpoints, load_args, work)
        final = root / f"{stamp}-canary"
        n = 1
        while final.exists():
            n += 1
            final = root / f"{stamp}-{n}-canary"
        arms = {
            name: _arm(name, endpoints[name][0], s, repo.rel(final / d.relative_to(work)))
            for name, (s, d) in runs.items()
        }
        decision, reasons, checks = decide(arms["stable"], arms["canary"], targets, rules)
        summary = {
            "decision": decision,
            "exit_code": EXIT[decision],
            "reasons": reasons,
            "env": args.env,
            "load": {"rate_rps": rate, "duration_s": duration, "protocol": args.protocol},
            "rules": asdict(rules),
            "slo": {"source": config.source, "targets": asdict(targets)},
            "slo_checks": checks,
            "arms": {name: asdict(arm) for name, arm in arms.items()},
            "host_headers": {n: h for n, (_, h) in endpoints.items()},
        }
        redact.write_text(work / "summary.json", json.dumps(summary, indent=2) + "\n")
        plot(summary, {n: s["timeline"] for n, (s, _) in runs.items()}, work / "comparison.png")
        os.replace(work, final)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    rows = [
        [label, *(fmt.format(getattr(arms[n], key)) for n in ARMS)]
        for label, key, fmt in (
            ("latency p50", "latency_p50_ms", "{:.2f} ms"),
            ("latency p99", "latency_p99_ms", "{:.2f} ms"),
            ("error ratio", "error_ratio", "{:.4f}"),
            ("completed", "completed", "{}"),
        )
    ]
    table = tabulate(
        rows,
        ["", *ARMS],
        tablefmt="plain",
        disable_numparse=True,
        colalign=("left", "right", "right"),
    )
    print(textwrap.indent(table, "  "))
    print(f"\n{decision.upper()} (exit {EXIT[decision]}): " + "; ".join(reasons))
    print(f"report: {repo.rel(final)}")
    return EXIT[decision]


if __name__ == "__main__":
    raise SystemExit(main())
