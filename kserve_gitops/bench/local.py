"""Benchmark of the local model server on this machine, written to BENCHMARKS.md (`make bench`).

For each server setting (upstream defaults vs tuned), worker count and protocol: the latency at
a fixed 80 req/s, then the highest arrival rate whose p99 (from the scheduled send time) stays
under 50 ms, found by doubling then bisecting (kserve_gitops.load.measure). The load generator
is the same open-loop Locust harness as `make loadtest`, in this process; its CPU share and the
server's are recorded for every point, and one point is cross-checked with wrk (bench.wrk).
The generator itself is measured too (bench.generator): the highest rate it sustains with 1, 2
and 4 Locust worker processes against a server that is never the bottleneck, and its CPU per
request (`--generator-only` measures just that, keeping the other results). Then the two
runtimes side by side, KServe's sklearn server and MLServer, in 5 interleaved rounds with the
generator and the server pinned to disjoint CPUs (bench.sidebyside, bench.rounds,
bench.pinning; `--runtimes-only` measures just that). It first waits up to 10 minutes for a
quiet machine and flags the results when it did not get one. `--cluster` then runs the
cluster-path benchmark too (`kgops bench-cluster` as `make bench-cluster` does: the environment's
parts, then another environment's scale-out; each in its own process; root and the node tools),
or says why it did not. bench.report writes the markdown, with the cluster sections rendered
from benchmarks/cluster-path.json and cluster-scaleout.json when there are (each with its own
date and machine).
"""

from __future__ import annotations

from kserve_gitops.load.measure import FIXED_RATE, SETTINGS, Knobs, measure, search_max_rate
from kserve_gitops.load.workers import WorkerError

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kserve_gitops.base import machine
from kserve_gitops.bench import cluster, generator, pinning, report, rounds, sidebyside, wrk
from kserve_gitops.bench.runtime_configs import select as select_runtime_configs
from kserve_gitops.repo import Repo, files
from kserve_gitops.serving import process
from kserve_gitops.serving.process import LocalServer

# What BENCHMARKS.md lists under Versions.
PACKAGES = ["kserve", "scikit-learn", "fastapi", "uvicorn", "uvloop", "locust", "hdrhistogram"]


def bench_protocol(
    repo: Repo, local: LocalServer, protocol: str, knobs: Knobs, log
) -> dict[str, Any]:
    """The fixed-rate point and the max-rate search of one protocol on a running server."""
    measure(repo, local, protocol, 50, 2)  # warm-up: connections, lazy imports, caches
    fixed = measure(repo, local, protocol, FIXED_RATE, knobs.fixed_s)
    lat = fixed["latency_ms"]
    log(
        f"  {protocol} at {FIXED_RATE:g} req/s: avg {lat['avg']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms"
    )
    best, steps = search_max_rate(repo, local, protocol, knobs, log)
    return {"protocol": protocol, "fixed": fixed, "max": best, "steps": steps}


def run(repo: Repo, args: argparse.Namespace, log=print) -> dict[str, Any]:
    knobs = Knobs(fixed_s=args.fixed_duration, step_s=args.step_duration, max_rate=args.max_rate)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.machine(),
        "versions": machine.package_versions(PACKAGES, missing="not installed"),
        "load_average_start": list(os.getloadavg()),
        "knobs": asdict(knobs),
        "configs": [],
        "wrk": None,
    }
    logs = Path(tempfile.mkdtemp(prefix="kgops-bench-"))  # server logs: large with access logs
    try:
        for setting in args.settings:
            for workers in args.workers:
                log(f"server: {setting}, {workers} worker(s) {' '.join(SETTINGS[setting])}")
                with process.running(
                    repo,
                    workers=workers,
                    extra_args=SETTINGS[setting],
                    log_path=logs / f"{setting}-{workers}.log",
                ) as local:
                    for protocol in args.protocols:
                        point = bench_protocol(repo, local, protocol, knobs, log)
                        results["configs"].append({"setting": setting, "workers": workers, **point})
                    if args.wrk and setting == "tuned" and workers == max(args.workers):
                        results["wrk"] = wrk.cross_check(repo, local, log)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    results["load_average_end"] = list(os.getloadavg())
    return results


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    p = argparse.ArgumentParser(prog="kgops bench", description=__doc__)
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--protocols", nargs="+", choices=("v1", "v2"), default=["v1", "v2"])
    p.add_argument("--fixed-duration", type=float, default=10.0, help="seconds at 80 req/s")
    p.add_argument("--step-duration", type=float, default=5.0, help="seconds per search step")
    p.add_argument("--max-rate", type=float, default=6400.0, help="search ceiling, req/s")
    p.add_argument(
        "--wait-for-quiet",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below"
        " --quiet-load (default %(default)g; 0: start at once); a run that starts busy is"
        " flagged in the output and BENCHMARKS.md",
    )
    p.add_argument("--quiet-load", type=float, default=1.0)
    p.add_argument(
        "--pin",
        default="auto",
        metavar="auto|off|GEN/SERVER",
        help="CPUs of the load generator and of the server under test in the runtimes side by"
        " side: auto (generator on the lowest available CPU, server on the others), off, or"
        " CPU lists such as 0/1 (default %(default)s)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the generator and the servers it starts (negative needs root):"
        " on a shared machine, -10 keeps other jobs from stealing the measured cores",
    )
    p.add_argument("--no-wrk", dest="wrk", action="store_false", help="skip the wrk cross-check")
    p.add_argument(
        "--generator-workers",
        nargs="+",
        type=int,
        default=[1, 2, 4],
        help="worker process counts for the generator limits",
    )
    p.add_argument("--generator-max-rate", type=float, default=25600.0, help="its search ceiling")
    p.add_argument(
        "--no-generator", dest="generator", action="store_false", help="skip the generator limits"
    )
    p.add_argument(
        "--generator-only",
        action="store_true",
        help="measure only the generator limits; the other results come from --results",
    )
    p.add_argument(
        "--no-runtimes",
        dest="runtimes",
        action="store_false",
        help="skip the side by side of KServe's sklearn server and MLServer",
    )
    p.add_argument(
        "--runtimes-only",
        action="store_true",
        help="measure only the runtimes side by side; the other results come from --results",
    )
    p.add_argument(
        "--runtime-rounds",
        type=int,
        default=rounds.DEFAULT_ROUNDS,
        help="interleaved rounds of the side by side (default %(default)s)",
    )
    p.add_argument(
        "--runtime-profile-rate",
        type=float,
        default=200.0,
        help="after the rounds, profile each configuration with py-spy at this V2 rate"
        " (0: skip; default %(default)g)",
    )
    p.add_argument(
        "--runtime-configs",
        nargs="+",
        help="configurations of the side by side (default: all of "
        "kserve_gitops.bench.runtime_configs.CONFIGS)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also run the cluster-path benchmark (make bench-cluster's kgops bench-cluster runs,"
        " each its own real-node e2e; root and make node-tools), or say why not, in the output"
        " and the file",
    )
    p.add_argument("--cluster-env", default="dev", help="its environment (default %(default)s)")
    p.add_argument(
        "--cluster-scaleout-env",
        default="staging",
        help="then the scale-out in this environment, into benchmarks/cluster-scaleout.md"
        " (default %(default)s; '': in --cluster-env, if its configuration allows one)",
    )
    p.add_argument("--fast-port", type=int, default=0, help="fast server port (0: any free one)")
    p.add_argument("--master-port", type=int, default=5557, help="Locust master port")
    p.add_argument("--out", type=Path, default=repo.root / "BENCHMARKS.md")
    p.add_argument("--plot", type=Path, default=repo.root / "benchmarks" / "bench.png")
    p.add_argument("--results", type=Path, default=repo.root / "benchmarks" / "results.json")
    p.add_argument(
        "--from-results",
        action="store_true",
        help="measure nothing: rebuild the markdown and the plot from --results",
    )
    args = p.parse_args(argv)
    if args.from_results:
        try:
            results = json.loads(args.results.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {repo.rel(args.results)}: {exc}", file=sys.stderr)
            return 2
        _publish(repo, results, args)
        return 0
    skipped = None if args.wrk else "--no-wrk"
    kept = args.generator_only or args.runtimes_only  # the other results come from --results
    if args.generator_only and args.runtimes_only:
        print("error: --generator-only and --runtimes-only exclude each other", file=sys.stderr)
        return 2
    if args.runtime_rounds < 1:
        print("error: --runtime-rounds: expected 1 or more", file=sys.stderr)
        return 2
    try:
        runtime_configs = select_runtime_configs(args.runtime_configs)
        pin = pinning.parse(args.pin, pinning.available())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pin_note = "" if pin else _no_pin_reason(args.pin)
    print(f"pinning (runtimes side by side): {pin.describe() if pin else 'none, ' + pin_note}")
    if args.wrk and not kept and not shutil.which("wrk"):
        skipped = "wrk is not installed (Debian: `apt-get install -y wrk`)"
        print(f"note: {skipped}; the cross-check is skipped")
        args.wrk = False
    started = time.monotonic()
    if args.nice:
        try:
            os.nice(args.nice)  # the servers started later inherit it
        except PermissionError:
            print(f"note: cannot set niceness {args.nice} (not root); running at 0")
            args.nice = 0
    quiet = machine.wait_for_quiet(args.wait_for_quiet, args.quiet_load)
    try:
        if kept:
            try:
                results = json.loads(args.results.read_text())
            except (OSError, ValueError) as exc:
                only = "--generator-only" if args.generator_only else "--runtimes-only"
                hint = f"{only} keeps the other results from it: run `make bench` first"
                print(f"error: {repo.rel(args.results)}: {exc} ({hint})", file=sys.stderr)
                return 2
        else:
            results = run(repo, args)
            results["quiet"] = quiet
            results["wrk_skipped"] = skipped
            results["nice"] = os.nice(0)
        if (args.generator and not args.runtimes_only) or args.generator_only:
            results["generator"] = generator.limits(
                repo,
                args.generator_workers,
                step_s=args.step_duration,
                max_rate=args.generator_max_rate,
                fast_port=args.fast_port,
                master_port=args.master_port,
            )
        if (args.runtimes and not args.generator_only) or args.runtimes_only:
            knobs = Knobs(
                fixed_s=args.fixed_duration,
                step_s=args.step_duration,
                start_rate=50.0,  # MLServer's defaults may not reach 100 req/s on a busy machine
                max_rate=args.max_rate,
            )
            results["runtimes"] = sidebyside.run(
                repo,
                knobs,
                args.runtime_rounds,
                runtime_configs,
                args.runtime_profile_rate,
                pin=pin,
                pin_note=pin_note,
            )
            results["runtimes"]["quiet"] = quiet
    except (RuntimeError, TimeoutError, WorkerError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results["cluster_not_run"] = (
        cluster.run_cluster(repo, args.cluster_env, args.cluster_scaleout_env)
        if args.cluster
        else None
    )
    files.write_text(args.results, json.dumps(results, indent=2) + "\n")
    _publish(repo, results, args)
    print(f"bench took {time.monotonic() - started:.0f}s")
    if not quiet["quiet"]:
        print(
            f"FLAGGED: started on a busy machine (load average {quiet['load_average'][0]:.2f}"
            f" >= {args.quiet_load:g}): not a benchmark result"
        )
    return 0


def _no_pin_reason(spec: str) -> str:
    if spec == "off":
        return "--pin off"
    return f"only CPU {pinning.cpulist(pinning.available())} available to this process"


def _publish(repo: Repo, results: dict[str, Any], args: argparse.Namespace) -> None:
    model = repo.default_model()
    with files.replacing(args.plot, suffix=".png") as tmp_plot:
        report.plot(results, model, tmp_plot)
    files.write_text(args.out, report.markdown(results, model, args.plot, args.out))
    print(f"\nwrote {repo.rel(args.out)}, {repo.rel(args.plot)}, {repo.rel(args.results)}")
    print("\n".join(report.aims(results)))


if __name__ == "__main__":
    raise SystemExit(main())
