"""The BENCHMARKS.md section of the runtimes side by side (bench.sidebyside measures it).

Every figure is the median of the rounds with its range; every comparison is a ratio taken
round by round, with its range; a comparison whose rounds' ratios lie on both sides of 1.0
gives no verdict (bench.rounds). Free of Locust: it only reads the results.
"""

from __future__ import annotations

from typing import Any

from kserve_gitops.base import tables
from kserve_gitops.bench import rounds
from kserve_gitops.bench.rounds import NO_VERDICT, Rounds

FIXED_RATE = 80.0  # load.measure.FIXED_RATE (not imported: that module loads Locust)
RECOMMENDED = "sklearnserver-tuned"
# Per protocol, the figures a round records (metric name -> point field).
LATENCY = ("avg", "p50", "p99", "max")
# The figures a recommendation compares: (metric, what it is called, whether higher is better).
FIGURES = (("avg_ms", "Latency", False), ("max_rate", "Throughput", True))


def metrics_of(points: list[dict[str, Any]]) -> dict[str, float]:
    """One configuration's figures of one round, named `<protocol>.<figure>`."""
    out: dict[str, float] = {}
    for p in points:
        proto, fixed, best = p["protocol"], p["fixed"], p["max"]
        for key in LATENCY:
            out[f"{proto}.{key}_ms"] = fixed["latency_ms"][key]
        out[f"{proto}.max_rate"] = best["rate"] if best else 0.0  # first step failed: 0
        out[f"{proto}.cpu_ms_at_80"] = fixed["server_cpu_ms_per_request"]
        if best and "server_cpu_ms_per_request" in best:
            out[f"{proto}.cpu_ms_at_max"] = best["server_cpu_ms_per_request"]
        out[f"{proto}.errors_at_80"] = fixed["errors"]
        out["rss_mib"] = sum(p["rss_mib"])
        out["processes"] = len(p["rss_mib"])
        out["cold_start_s"] = p["cold_start_s"]
    return out


def rounds_of(results: dict[str, Any]) -> Rounds:
    """The rounds as recorded, or rebuilt from the points of results written before the rounds
    runner (no load average per round there)."""
    if "rounds_run" in results:
        found = Rounds.from_json(results["rounds_run"])
        return found
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for point in results["points"]:
        grouped.setdefault((point["round"], point["config"]), []).append(point)
    return Rounds(
        order=results.get("order", []),
        records=[
            rounds.Record(n, config, [], 0.0, 0.0, metrics_of(points))
            for (n, config), points in sorted(grouped.items())
        ],
        load_average_start=results.get("load_average_start", []),
        load_average_end=results.get("load_average_end", []),
    )


def protocols_of(run: Rounds) -> dict[str, list[str]]:
    """Per protocol, the configurations measured on it, in the order they were declared."""
    names = list(dict.fromkeys(r.config for r in run.records))
    return {
        proto: [n for n in names if run.values(n, f"{proto}.avg_ms")]
        for proto in ("v1", "v2")
        if any(run.values(n, f"{proto}.avg_ms") for n in names)
    }


def _median(run: Rounds, config: str, metric: str) -> float:
    found = run.spread(config, metric)
    return found.median if found else 0.0


def _cell(run: Rounds, config: str, metric: str, fmt: str = ".2f") -> str:
    found = run.spread(config, metric)
    return found.text(fmt) if found else "-"


def _loads(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values)


def header(results: dict[str, Any], run: Rounds) -> list[str]:
    """When, how busy, pinned how, which versions."""
    n = len(run.order)
    loads = run.round_loads()
    per_round = (
        f"; 1-minute load average at each round's start {_loads(loads)}"
        " (it includes this benchmark's own generator and server)"
        if any(r.load_average for r in run.records)
        else ""
    )
    lines = [
        f"Measured {results['date']} in {n} interleaved round{'s' if n != 1 else ''}: load"
        f" average {_loads(run.load_average_start)} at the start{per_round},"
        f" {_loads(run.load_average_end)} at the end.",
        "",
        _pinning_line(results),
    ]
    quiet = results.get("quiet")
    if quiet and not quiet["quiet"]:
        lines += ["", busy_flag(quiet)]
    versions = ", ".join(f"{n} {v}" for n, v in results["versions"].items())
    return [*lines, "", f"Versions: {versions}."]


def busy_flag(quiet: dict[str, Any]) -> str:
    waited = (
        f"after waiting {quiet['waited_s']:.0f} s"
        if quiet["timeout_s"]
        else "with no wait (--wait-for-quiet 0)"
    )
    return (
        f"**Flagged: started on a busy machine.** The 1-minute load average was"
        f" {quiet['load_average'][0]:.2f} (quiet means below {quiet['threshold']:g}) {waited};"
        " treat these figures as a smoke run, not as a benchmark result."
    )


def _pinning_line(results: dict[str, Any]) -> str:
    pin = results.get("pinning")
    if not pin:
        reason = results.get("pinning_note") or "a run from before pinning existed"
        return f"CPU pinning: none ({reason}): the generator and the servers shared the cores."
    seen = results.get("pinning_observed") or {}
    observed = (
        f" Observed: the generator's threads on CPU {seen['generator']}, every thread of every"
        f" server process on CPU {seen['server']}."
        if seen
        else ""
    )
    return (
        f"CPU pinning: the load generator (this process, Locust in it) on CPU"
        f" {_cpus(pin['generator'])}, the server under test (all its processes) on CPU"
        f" {_cpus(pin['server'])}, of {results.get('cpus_online', '?')} online.{observed} Other"
        " jobs on the machine may still run on either."
    )


def _cpus(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def table(run: Rounds, proto: str, names: list[str], knobs: dict[str, Any]) -> list[str]:
    """One protocol's rows: medians (min-max), and ratios to the best median taken per round."""
    fastest = min(names, key=lambda n: _median(run, n, f"{proto}.avg_ms"))
    top = max(names, key=lambda n: _median(run, n, f"{proto}.max_rate"))
    head = ["configuration", "avg", "p50", "p99", f"max (ms at {FIXED_RATE:g} req/s)"]
    head += [f"avg vs {fastest}", "max rate req/s", "each round", f"rate vs {top}"]
    head += [f"CPU ms/request at {FIXED_RATE:g}", "at max rate", "RSS MiB (processes)"]
    start = knobs["start_rate"]
    rows = []
    for name in sorted(names, key=lambda n: -_median(run, n, f"{proto}.max_rate")):
        rates = " / ".join(
            f"{v:.0f}" if v else f"<{start:g}" for v in run.values(name, f"{proto}.max_rate")
        )
        rows.append(
            [
                name,
                *(_cell(run, name, f"{proto}.{k}_ms") for k in LATENCY),
                run.ratio(name, fastest, f"{proto}.avg_ms").text(),
                _cell(run, name, f"{proto}.max_rate", ".0f"),
                rates,
                run.ratio(name, top, f"{proto}.max_rate").text(),
                _cell(run, name, f"{proto}.cpu_ms_at_80"),
                _cell(run, name, f"{proto}.cpu_ms_at_max"),
                f"{_cell(run, name, 'rss_mib', '.0f')} ({_median(run, name, 'processes'):.0f})",
                _cell(run, name, "cold_start_s", ".1f"),
            ]
        )
    return tables.markdown(rows, [*head, "cold start s"])


def _compare(run: Rounds, a: str, b: str, metric: str, higher_is_better: bool) -> tuple[str, str]:
    """(`x1.20 (x1.10-x1.30, 5 rounds)`, verdict) of a over b."""
    ratio = run.ratio(a, b, metric)
    return ratio.text(), ratio.verdict(higher_is_better)


def recommendations(run: Rounds, runtimes: dict[str, str]) -> list[str]:
    """Per protocol the best latency and rate, each against the runner-up round by round, then
    the goal; every line computed from the figures so that a re-run keeps the text true."""
    out = []
    for proto, names in protocols_of(run).items():
        if len(names) < 2:
            continue
        for metric, what, higher in FIGURES:
            key = f"{proto}.{metric}"
            ranked = sorted(names, key=lambda n: _median(run, n, key), reverse=higher)
            best, second = ranked[0], ranked[1]
            ratio, verdict = _compare(run, best, second, key, higher)
            figure = (
                f"avg {_cell(run, best, key)} ms at {FIXED_RATE:g} req/s"
                if metric == "avg_ms"
                else f"{_cell(run, best, key, '.0f')} req/s with p99 <= 50 ms"
            )
            said = f"**{best}**" if verdict != NO_VERDICT else f"{NO_VERDICT} ({best} by median)"
            out.append(
                f"- {what}, {proto.upper()}: {said}, {figure}; over {second} per round {ratio}."
            )
    out += goal(run, runtimes)
    return out


def goal(run: Rounds, runtimes: dict[str, str]) -> list[str]:
    """Issue 26's goal: the recommended setting at least as fast as the best MLServer setting
    on both figures (avg at 80 req/s: ratio <= 1; max rate: ratio >= 1) in every round, on V1
    and V2 against MLServer's V2 (its only protocol)."""
    ml = [n for n, rt in runtimes.items() if rt == "mlserver" and run.values(n, "v2.avg_ms")]
    ours = [p for p in ("v1", "v2") if run.values(RECOMMENDED, f"{p}.avg_ms")]
    if not ml or not ours:
        return []
    best_avg = min(ml, key=lambda n: _median(run, n, "v2.avg_ms"))
    best_rate = max(ml, key=lambda n: _median(run, n, "v2.max_rate"))
    parts, outcomes = [], []
    for proto in ours:
        for metric, other, higher in (("avg_ms", best_avg, False), ("max_rate", best_rate, True)):
            ratio = run.ratio(RECOMMENDED, other, f"{proto}.{metric}", f"v2.{metric}")
            verdict = ratio.verdict(higher)
            if verdict == NO_VERDICT:
                outcomes.append("none")
            else:
                outcomes.append("met" if verdict.startswith(RECOMMENDED) else "not")
            label = "avg" if metric == "avg_ms" else "max rate"
            parts.append(f"{proto.upper()} {label} {ratio.text()} ({verdict})")
    if "not" in outcomes:
        overall = "NOT met (MLServer better in every round on at least one figure)"
    elif "none" in outcomes:
        overall = f"{NO_VERDICT} on at least one figure"
    else:
        overall = "met in every round"
    return [
        f"- Goal, {RECOMMENDED} at least as fast as the best MLServer setting ({best_avg} for"
        f" latency, {best_rate} for rate, V2), ratio per round: {'; '.join(parts)}: {overall}."
    ]


def resources(run: Rounds) -> list[str]:
    names = list(dict.fromkeys(r.config for r in run.records))
    rss = {n: _median(run, n, "rss_mib") for n in names}
    cold = {n: _median(run, n, "cold_start_s") for n in names}
    if not names:
        return []
    small, big = min(rss, key=rss.__getitem__), max(rss, key=rss.__getitem__)
    quick, slow = min(cold, key=cold.__getitem__), max(cold, key=cold.__getitem__)
    return [
        f"- Memory: **{small}** ({_cell(run, small, 'rss_mib', '.0f')} MiB RSS; {big}"
        f" {_cell(run, big, 'rss_mib', '.0f')} MiB). Cold start: **{quick}**"
        f" ({_cell(run, quick, 'cold_start_s', '.1f')} s; {slow}"
        f" {_cell(run, slow, 'cold_start_s', '.1f')} s): what scale-from-zero adds to the first"
        " request."
    ]


def markdown(results: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Runtimes side by side: KServe's sklearn server and MLServer", ""]
    if not results:
        return [*lines, "Not measured (`make bench` measures them unless --no-runtimes)."]
    run = rounds_of(results)
    k = results["knobs"]
    lines += header(results, run)
    lines += [
        "",
        "Each round starts every configuration afresh (1 HTTP process each), in an order that"
        " rotates between rounds (round r starts with configuration r, so every configuration"
        " runs in every position), and measures it the same way as above: cold start, then per"
        f" protocol a 2 s warm-up, {FIXED_RATE:g} req/s for {k['fixed_s']:g} s, and the"
        f" max-rate search ({k['step_s']:g} s steps, p99 <= {k['p99_ms']:g} ms from the"
        " scheduled send time; a round whose first step failed counts as 0). Figures are the"
        " medians of the rounds with their range (min-max) in brackets. Ratios are taken round"
        " by round (this configuration's figure over the other's in the same round) and given as"
        " their median with their range; a comparison names a winner only when every round's"
        f' ratio lies on the same side of 1.0, otherwise it says "{NO_VERDICT}". Server CPU'
        " per request: CPU seconds of the runtime's processes over the completed requests (at"
        " the max rate: one more step at that rate). RSS: the sum over the runtime's processes"
        " after the run (MLServer: the HTTP process and its inference workers; not this"
        " repository's launcher).",
        "",
        *tables.markdown(
            [(c["name"], c["note"]) for c in results["configs"]], ("configuration", "setting")
        ),
    ]
    declared = [c["name"] for c in results["configs"]]
    for proto, names in protocols_of(run).items():
        absent = [n for n in declared if n not in names]
        lines += [
            "",
            f"### {proto.upper()}"
            + (f" ({', '.join(absent)}: no {proto.upper()} endpoint)" if absent else ""),
            "",
            *table(run, proto, names, k),
        ]
    lines += profile_section(results.get("profiles"), pinned=bool(results.get("pinning")))
    lines += ["", "### Which runtime for which use", ""]
    runtimes = {c["name"]: c["runtime"] for c in results["configs"]}
    return lines + recommendations(run, runtimes) + resources(run)


def profile_section(found: list[dict[str, Any]] | str | None, pinned: bool) -> list[str]:
    if not found:
        return []
    lines = ["", "### Where the Python time goes (py-spy)", ""]
    if isinstance(found, str):
        return [*lines, f"Not sampled: {found}."]
    first = found[0]
    lines += [
        "`kgops profile` for each configuration after the rounds"
        + (" (pinned as the rounds)" if pinned else "")
        + ": V2"
        f" at {first['rate']:g} req/s for {first['duration_s']:g} s after a warm-up, py-spy at"
        " 200 Hz over the runtime's processes, samples of threads holding the GIL (waiting in"
        " the event loop's poll and native code that releases the GIL, such as uvloop's I/O, are"
        " not seen), grouped by the library of the innermost Python frame (standard-library"
        " frames are charged to their caller). One run each, no rounds: shares, not timings."
        " Share of each configuration's samples:",
        "",
    ]
    groups = sorted(  # stable: ties keep the order of the first profile's groups
        dict.fromkeys(g for p in found for g in p["shares"]),
        key=lambda g: -max(p["shares"].get(g, 0) for p in found),
    )
    rows = [[g, *(f"{100 * p['shares'].get(g, 0):.1f}%" for p in found)] for g in groups]
    samples = [
        f"{p['samples']} ({p['latency_ms']['avg']:.1f} / {p['latency_ms']['p99']:.1f})"
        for p in found
    ]
    rows.append(["samples (latency avg / p99 ms)", *samples])
    return [*lines, *tables.markdown(rows, ["where", *(p["config"] for p in found)])]
