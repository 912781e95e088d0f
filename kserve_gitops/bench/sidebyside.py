"""KServe's sklearn server and MLServer measured side by side in one run (part of `make bench`).

Every runtime and setting is started afresh in each round, in an order that rotates between
rounds, so that a neighbour's burst on the shared machine falls on different configurations
in different rounds. Per configuration and protocol: cold start (process start to the first
successful prediction), latency at 80 req/s from the scheduled send time, the highest arrival
rate with p99 <= 50 ms (kserve_gitops.bench.measure's search), server CPU per request and the
resident memory of the runtime's processes.
"""

from __future__ import annotations

# Locust (via measure) monkey-patches the standard library with gevent: import it first.
from kserve_gitops.bench import measure  # isort: skip
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from kserve_gitops.bench import machine
from kserve_gitops.repo import Repo
from kserve_gitops.serving import client, mlserver, process, runtimes
from kserve_gitops.serving.process import LocalServer


@dataclass(frozen=True)
class Config:
    name: str
    runtime: str
    args: tuple[str, ...]
    note: str

    @property
    def protocols(self) -> tuple[str, ...]:
        return runtimes.PROTOCOLS[self.runtime]


CONFIGS = (
    Config("sklearnserver-upstream", "sklearnserver", (), "KServe's defaults"),
    Config(
        "sklearnserver-tuned",
        "sklearnserver",
        tuple(measure.SETTINGS["tuned"]),
        "this project's recommended settings: " + " ".join(measure.SETTINGS["tuned"]),
    ),
    Config(
        "mlserver-upstream",
        "mlserver",
        (),
        "the image's defaults: one inference worker process behind the HTTP process, debug on",
    ),
    Config(
        "mlserver-inprocess",
        "mlserver",
        ("--workers", "0", "--debug", "false"),
        "parallel_workers 0 (inference in the HTTP process), debug off (no access log)",
    ),
)
PREDICT_BODY = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}


def runtime_procs(local: LocalServer, runtime: str) -> list[psutil.Process]:
    """The processes the runtime runs in the pod: MLServer's launcher here is ours, not MLServer."""
    root = psutil.Process(local.process.pid)
    children = root.children(recursive=True)
    return children if runtime == "mlserver" else [root, *children]


def _rss_mib(procs: list[psutil.Process]) -> list[float]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.append(proc.memory_info().rss / 2**20)
    return out


def cold_start(repo: Repo, config: Config, port: int, log_path: Path) -> tuple[LocalServer, float]:
    """Start the configuration's server; seconds from process start to a successful
    prediction (V2 for MLServer, V1 otherwise; both protocols share the loaded model)."""
    protocol = config.protocols[0]
    path = client.predict_path(protocol, repo.default_model())
    body = client.request_body(protocol, PREDICT_BODY["instances"])
    started = time.monotonic()
    local = process.start_background(
        repo,
        config.runtime,
        port=port,
        extra_args=list(config.args),
        log_path=log_path,
        timeout=180,
    )
    while True:
        try:
            response = httpx.post(local.url + path, json=body, timeout=5, trust_env=False)
            if response.status_code == 200:
                return local, time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > 180:
            local.stop()
            raise TimeoutError(f"{config.name}: no successful prediction within 180 s")
        time.sleep(0.01)


def measure_point(
    repo: Repo, local: LocalServer, runtime: str, protocol: str, rate: float, duration: float
) -> dict[str, Any]:
    """measure.measure plus the runtime's CPU time per completed request."""
    procs = runtime_procs(local, runtime)
    before = measure.cpu_seconds(procs)
    point = measure.measure(repo, local, protocol, rate, duration)
    cpu = measure.cpu_seconds(procs) - before
    point["server_cpu_ms_per_request"] = 1000 * cpu / max(point["requests"], 1)
    return point


def run_config(
    repo: Repo,
    config: Config,
    knobs: measure.Knobs,
    logs: Path,
    round_no: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    local, cold = cold_start(
        repo, config, process.port_block(), logs / f"{config.name}-{round_no}.log"
    )
    log(f"  {config.name}: cold start {cold:.2f} s")
    out = []
    try:
        for protocol in config.protocols:
            measure.measure(repo, local, protocol, 50, 2)  # warm-up: connections, lazy imports
            fixed = measure_point(
                repo, local, config.runtime, protocol, measure.FIXED_RATE, knobs.fixed_s
            )
            lat = fixed["latency_ms"]
            log(
                f"  {config.name} {protocol} at {measure.FIXED_RATE:g} req/s: avg {lat['avg']:.2f}"
                f" ms, p99 {lat['p99']:.2f} ms, server {fixed['server_cpu_ms_per_request']:.2f}"
                " ms CPU/request"
            )
            best, steps = measure.search_max_rate(repo, local, protocol, knobs, log)
            if best:  # CPU per request at the max-rate point, from the same processes
                point = measure_point(
                    repo, local, config.runtime, protocol, best["rate"], knobs.step_s
                )
                best = {**best, "server_cpu_ms_per_request": point["server_cpu_ms_per_request"]}
            rss = _rss_mib(runtime_procs(local, config.runtime))
            out.append(
                {
                    "config": config.name,
                    "runtime": config.runtime,
                    "protocol": protocol,
                    "round": round_no,
                    "cold_start_s": cold,
                    "rss_mib": rss,
                    "fixed": fixed,
                    "max": best,
                    "steps": steps,
                }
            )
    finally:
        local.stop()
    return out


def versions(repo: Repo) -> dict[str, str | None]:
    """The runtimes' own versions: kserve in this venv, MLServer in its own."""
    names = ["mlserver", "mlserver-sklearn", "scikit-learn", "fastapi", "uvicorn", "uvloop"]
    done = subprocess.run(
        [str(mlserver.mlserver_command(repo).parent / "python"), "-c",
         "import json, sys; from importlib.metadata import version; "
         "print(json.dumps({n: version(n) for n in sys.argv[1:]}))", *names],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    theirs = json.loads(done.stdout)
    return {
        **machine.package_versions(["kserve"]),
        **{n if n.startswith("mlserver") else f"{n} (MLServer venv)": theirs[n] for n in names},
    }


def run(
    repo: Repo,
    knobs: measure.Knobs,
    rounds: int,
    configs: tuple[Config, ...] = CONFIGS,
    profile_rate: float = 0.0,
    log=print,
) -> dict[str, Any]:
    """The rounds, then (profile_rate > 0) a py-spy profile of each configuration over V2 at
    that rate for knobs.fixed_s seconds."""
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": list(os.getloadavg()),
        "knobs": asdict(knobs),
        "rounds": rounds,
        "configs": [
            {"name": c.name, "runtime": c.runtime, "args": list(c.args), "note": c.note}
            for c in configs
        ],
        "versions": versions(repo),
        "order": [],
        "points": [],
    }
    with tempfile.TemporaryDirectory(prefix="kgops-sidebyside-") as logs:
        for r in range(rounds):
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            log(f"runtimes, round {r + 1}/{rounds}: {', '.join(c.name for c in order)}")
            results["order"].append([c.name for c in order])
            for config in order:
                results["points"].extend(run_config(repo, config, knobs, Path(logs), r + 1, log))
        if profile_rate:
            results["profiles"] = profiles(
                repo, configs, profile_rate, knobs.fixed_s, Path(logs), log
            )
    results["load_average_end"] = list(os.getloadavg())
    return results


def profiles(
    repo: Repo, configs: tuple[Config, ...], rate: float, duration: float, logs: Path, log
) -> list[dict[str, Any]] | str:
    """Where each configuration's Python time goes (kserve_gitops.serving.profile), or why it
    could not be sampled."""
    from kserve_gitops.serving import profile  # it builds on this module

    out = []
    for config in configs:
        try:
            counts, point = profile.profile(repo, config, "v2", rate, duration, logs / config.name)
        except (FileNotFoundError, RuntimeError) as exc:
            log(f"  profile skipped: {exc}")
            return str(exc).splitlines()[0]
        total = sum(counts.values()) or 1
        out.append(
            {
                "config": config.name,
                "rate": rate,
                "duration_s": duration,
                "latency_ms": point["latency_ms"],
                "samples": sum(counts.values()),
                "shares": {name: count / total for name, count in counts.most_common()},
            }
        )
        log(f"  profile {config.name}: {sum(counts.values())} samples")
    return out


# ---- BENCHMARKS.md section -------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (configuration, protocol): the rounds' figures and their medians (a neighbour's burst
    on the shared machine spoils a round; the median of several keeps one such round out)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for point in results["points"]:
        grouped.setdefault((point["config"], point["protocol"]), []).append(point)
    out = {}
    for key, points in grouped.items():
        fixed = [p["fixed"] for p in points]
        rates = [p["max"]["rate"] if p["max"] else 0.0 for p in points]
        at_max = [p["max"]["server_cpu_ms_per_request"] for p in points if p["max"]]
        out[key] = {
            "latency_ms": {
                k: statistics.median(f["latency_ms"][k] for f in fixed)
                for k in ("avg", "p50", "p99", "max")
            },
            "errors_at_80": sum(f["errors"] for f in fixed),
            "rates": rates,
            "rate": statistics.median(rates),
            "cpu_ms_at_80": statistics.median(f["server_cpu_ms_per_request"] for f in fixed),
            "cpu_ms_at_max": statistics.median(at_max) if at_max else None,
            "rss_mib": statistics.median(sum(p["rss_mib"]) for p in points),
            "processes": max(len(p["rss_mib"]) for p in points),
            "cold_start_s": [p["cold_start_s"] for p in points],
        }
    return out


def _rates(values: list[float], start: float) -> str:
    return " / ".join(f"{v:.0f}" if v else f"<{start:g}" for v in values)


def markdown(results: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Runtimes side by side: KServe's sklearn server and MLServer", ""]
    if not results:
        return [*lines, "Not measured (`make bench` measures them unless --no-runtimes)."]
    summary = summarize(results)
    k = results["knobs"]
    load = " / ".join(f"{x:.2f}" for x in results["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in results["load_average_end"])
    versions = ", ".join(f"{n} {v}" for n, v in results["versions"].items())
    lines += [
        f"Measured {results['date']} in {results['rounds']} round"
        f"{'s' if results['rounds'] != 1 else ''}, load average {load} at the"
        f" start, {load_end} at the end (a shared 2-core machine: other engineers' builds"
        " and tests ran during the run, as the load average shows). Versions: " + versions + ".",
        "",
        "Each round starts every configuration afresh (1 HTTP process each), in an order that"
        " rotates between rounds, and measures it the same way as above: cold start, then per"
        f" protocol a 2 s warm-up, {measure.FIXED_RATE:g} req/s for {k['fixed_s']:g} s, and the"
        f" max-rate search ({k['step_s']:g} s steps, p99 <= {k['p99_ms']:g} ms from the"
        " scheduled send time). Figures are the medians of the rounds; max rate and cold start"
        " list every round (a round whose first step failed counts as 0). Server"
        " CPU per request: CPU seconds of the runtime's processes over"
        " the completed requests (at the max rate: one more step at that rate). RSS: the sum"
        " over the runtime's processes after the run (MLServer: the HTTP process and its"
        " inference workers; not this repository's launcher).",
        "",
        "| configuration | setting |",
        "|---|---|",
        *(f"| {c['name']} | {c['note']} |" for c in results["configs"]),
    ]
    for protocol in ("v1", "v2"):
        rows = {name: s for (name, proto), s in summary.items() if proto == protocol}
        if not rows:
            continue
        fastest_avg = min(s["latency_ms"]["avg"] for s in rows.values())
        best_rate = max(s["rate"] for s in rows.values()) or 1.0
        absent = [c["name"] for c in results["configs"] if c["name"] not in rows]
        lines += [
            "",
            f"### {protocol.upper()}"
            + (f" ({', '.join(absent)}: no {protocol.upper()} endpoint)" if absent else ""),
            "",
            f"| configuration | avg | p50 | p99 | max (ms at {measure.FIXED_RATE:g} req/s) "
            "| avg vs fastest | max rate (req/s, each round) | rate vs fastest "
            f"| CPU ms/request at {measure.FIXED_RATE:g} | at max rate | RSS MiB (processes) "
            "| cold start s (each round) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in sorted(rows.items(), key=lambda item: -item[1]["rate"]):
            lat = s["latency_ms"]
            colds = " / ".join(f"{v:.1f}" for v in s["cold_start_s"])
            at_max = f"{s['cpu_ms_at_max']:.2f}" if s["cpu_ms_at_max"] is not None else "-"
            lines.append(
                f"| {name} | {lat['avg']:.2f} | {lat['p50']:.2f} | {lat['p99']:.2f} | "
                f"{lat['max']:.2f} | x{lat['avg'] / fastest_avg:.2f} | "
                f"{s['rate']:.0f} ({_rates(s['rates'], k['start_rate'])}) | "
                f"x{s['rate'] / best_rate:.2f} | {s['cpu_ms_at_80']:.2f} | {at_max} | "
                f"{s['rss_mib']:.0f} ({s['processes']}) | {colds} |"
            )
    lines += _profile_section(results.get("profiles"))
    lines += ["", "### Which runtime for which use", ""]
    lines += _spread(summary)
    lines += recommendations(summary)
    return lines


def _spread(summary: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """How far the rounds of one configuration disagree: the noise floor of the comparison."""
    spreads = {
        key: max(s["rates"]) / min(s["rates"])
        for key, s in summary.items()
        if len(s["rates"]) > 1 and min(s["rates"]) > 0
    }
    failed = sorted(f"{n} {p.upper()}" for (n, p), s in summary.items() if 0 in s["rates"])
    if not spreads and not failed:
        return []
    text = "- Noise: "
    if spreads:
        (name, proto), worst = max(spreads.items(), key=lambda item: item[1])
        text += (
            f"the rounds of one configuration disagree by up to x{worst:.2f} on the max rate"
            f" ({name} {proto.upper()})"
        )
    if failed:
        text += ("; " if spreads else "") + f"a round failed its first step in {', '.join(failed)}"
    return [text + ". Differences smaller than that are within this machine's noise."]


def _profile_section(found: list[dict[str, Any]] | str | None) -> list[str]:
    if not found:
        return []
    lines = ["", "### Where the Python time goes (py-spy)", ""]
    if isinstance(found, str):
        return [*lines, f"Not sampled: {found}."]
    first = found[0]
    lines += [
        "`kgops profile` for each configuration after the rounds: V2"
        f" at {first['rate']:g} req/s for {first['duration_s']:g} s after a warm-up, py-spy at"
        " 200 Hz over the runtime's processes, samples of threads holding the GIL (waiting in"
        " the event loop's poll and native code that releases the GIL, such as uvloop's I/O, are"
        " not seen), grouped by the library of the innermost Python frame (standard-library"
        " frames are charged to their caller). Share of each configuration's samples:",
        "",
        "| where | " + " | ".join(p["config"] for p in found) + " |",
        "|---|" + "---|" * len(found),
    ]
    groups = sorted(  # stable: ties keep the order of the first profile's groups
        dict.fromkeys(g for p in found for g in p["shares"]),
        key=lambda g: -max(p["shares"].get(g, 0) for p in found),
    )
    for group in groups:
        cells = " | ".join(f"{100 * p['shares'].get(group, 0):.1f}%" for p in found)
        lines.append(f"| {group} | {cells} |")
    lines.append(
        "| samples (latency avg / p99 ms) | "
        + " | ".join(
            f"{p['samples']} ({p['latency_ms']['avg']:.1f} / {p['latency_ms']['p99']:.1f})"
            for p in found
        )
        + " |"
    )
    return lines


def recommendations(summary: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """One line per use, computed from the figures so that a re-run keeps the text true."""
    out = []
    for protocol in ("v1", "v2"):
        rows = {name: s for (name, proto), s in summary.items() if proto == protocol}
        if len(rows) < 2:
            continue
        by_avg = sorted(rows, key=lambda n: rows[n]["latency_ms"]["avg"])
        by_rate = sorted(rows, key=lambda n: -rows[n]["rate"])
        first, second = by_avg[0], by_avg[1]
        best_avg, next_avg = (rows[n]["latency_ms"]["avg"] for n in (first, second))
        out.append(
            f"- Latency, {protocol.upper()}: **{first}** (avg {best_avg:.2f} ms at"
            f" {measure.FIXED_RATE:g} req/s; next {second} x{next_avg / best_avg:.2f})."
        )
        top, runner = by_rate[0], by_rate[1]
        ratio = rows[runner]["rate"] / rows[top]["rate"] if rows[top]["rate"] else 0.0
        out.append(
            f"- Throughput, {protocol.upper()}: **{top}** ({rows[top]['rate']:.0f} req/s with p99"
            f" <= 50 ms; next {runner} x{ratio:.2f})."
        )
    out += _goal(summary)
    names = {name for name, _ in summary}
    rss = {n: max(s["rss_mib"] for (m, _), s in summary.items() if m == n) for n in names}
    cold = {
        n: statistics.median(
            v for (m, _), s in summary.items() if m == n for v in s["cold_start_s"]
        )
        for n in names
    }
    small, big = min(rss, key=rss.get), max(rss, key=rss.get)
    quick, slow = min(cold, key=cold.get), max(cold, key=cold.get)
    out.append(
        f"- Memory: **{small}** ({rss[small]:.0f} MiB RSS; {big} {rss[big]:.0f} MiB,"
        f" x{rss[big] / rss[small]:.2f}). Cold start: **{quick}** ({cold[quick]:.1f} s;"
        f" {slow} {cold[slow]:.1f} s): what scale-from-zero adds to the first request."
    )
    return out


def select(names: list[str] | None) -> tuple[Config, ...]:
    """The named configurations (all when None), or ValueError naming the unknown ones."""
    if not names:
        return CONFIGS
    known = {c.name: c for c in CONFIGS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"--runtime-configs: unknown {', '.join(unknown)}; expected some of {', '.join(known)}"
        )
    return tuple(known[n] for n in names)


def _goal(summary: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Issue 16's goal: the recommended sklearn server setting at least as fast as the best
    MLServer setting of the same run, at 80 req/s (avg) and at the max rate, on V1 and V2
    (MLServer's figures are V2, its only protocol)."""
    runtime = {c.name: c.runtime for c in CONFIGS}
    ml = {
        n: s for (n, proto), s in summary.items() if runtime.get(n) == "mlserver" and proto == "v2"
    }
    ours = {proto: s for (n, proto), s in summary.items() if n == "sklearnserver-tuned"}
    if not ml or not ours:
        return []
    best_avg = min(ml, key=lambda n: ml[n]["latency_ms"]["avg"])
    best_rate = max(ml, key=lambda n: ml[n]["rate"])
    parts, met = [], True
    for proto, s in sorted(ours.items()):
        avg = s["latency_ms"]["avg"] / ml[best_avg]["latency_ms"]["avg"]
        rate = s["rate"] / ml[best_rate]["rate"] if ml[best_rate]["rate"] else float("inf")
        met = met and avg <= 1 and rate >= 1
        parts.append(f"{proto.upper()} avg x{avg:.2f}, max rate x{rate:.2f}")
    return [
        f"- Goal, sklearnserver-tuned against the best MLServer setting of this run ({best_avg}"
        f" for latency, {best_rate} for rate, V2): {'; '.join(parts)} (avg at most x1 and rate at"
        f" least x1 mean at least as fast): {'met' if met else 'NOT met'}."
    ]
