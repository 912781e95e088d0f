"""benchmarks/cluster-path.md (and cluster-scaleout.md), and the cluster sections of
BENCHMARKS.md, from the record `kgops bench-cluster` writes (benchmarks/cluster-path.json): the
same text wherever it appears, redrawn from the record without measuring, with a section for
each part the record has."""

from __future__ import annotations

from typing import Any

from kserve_gitops.base import tables
from kserve_gitops.bench import cluster_rates, rounds

SLO_PATHS = ("local", "service", "port-forward", "activator")
RATE_PATHS = SLO_PATHS[1:]
FIGURES = ("avg", "p50", "p99", "max")
PLOTS = {
    "rates": "cluster-rates.png",
    "cold_starts": "cluster-cold-start.png",
    "scaleout": "cluster-scaleout.png",
}


def rate_points(result: rounds.Rounds) -> list[cluster_rates.RatePoint]:
    """The (path, rate) points of the rate table, from the records' names (`path@rate`), by
    rate then path."""
    seen = {tuple(r.config.rsplit("@", 1)) for r in result.records}
    order = {p: n for n, p in enumerate(RATE_PATHS)}
    return [
        cluster_rates.RatePoint(path, "", float(rate))
        for path, rate in sorted(seen, key=lambda pr: (float(pr[1]), order.get(pr[0], 99)))
    ]


def _slo_section(doc: dict[str, Any]) -> list[str]:
    meta = doc["meta"]
    result = rounds.Rounds(order=[], records=[rounds.Record(**r) for r in doc["records"]])
    paths = [p for p in SLO_PATHS if result.values(p, "avg_ms")]
    metrics = (*(f"{k}_ms" for k in FIGURES), "rps", "errors", "generator_cpu_pct")
    rows = []
    for path in paths:
        cells = [result.spread(path, m) for m in metrics]
        rows.append(
            [
                path,
                *(
                    "-" if s is None else f"{s.median:.2f} [{s.low:.2f}-{s.high:.2f}]"
                    for s in cells
                ),
            ]
        )
    lines = [
        "## Latency and throughput (median of the rounds, min-max in brackets)",
        "",
        *tables.markdown(
            rows,
            ("path", "avg ms", "p50 ms", "p99 ms", "max ms", "req/s", "errors", "generator CPU %"),
        ),
        "",
        "## Ratio to local, round by round (avg latency)",
        "",
    ]
    for path in paths[1:]:
        r = result.ratio(path, "local", "avg_ms")
        lines.append(f"- {path} / local: {r.text()}; {r.verdict(higher_is_better=False)}")
    return [
        *lines,
        "",
        "The report we start from: 120 ms average, 250 ms max, 80 req/s (minikube, port-forward).",
        "",
        f"{meta['rounds']} interleaved rounds, each path {meta['duration']:g} s at"
        f" {meta['rate']:g} req/s.",
    ]


def _rate_section(doc: dict[str, Any]) -> list[str]:
    meta = doc["meta"]
    result = rounds.Rounds(order=[], records=[rounds.Record(**r) for r in doc["rate_records"]])
    lines = [
        "## KServe's table through the real node",
        "",
        (
            f"{meta['rate_rounds']} interleaved rounds of {meta['rate_duration']:g} s"
            if "rate_duration" in meta
            else "Interleaved rounds"  # an older record does not say
        )
        + " per path and rate (median [min-max]); KServe's row beside each:"
        f" {cluster_rates.KSERVE_SOURCE}. Here: one real node on 2 shared cores, the load"
        " generator on the same machine.",
        "",
    ]
    if doc.get("autoscaling"):
        lines += [_declared(doc["autoscaling"]), ""]
    return [*lines, cluster_rates.rate_table(result, rate_points(result)), ""]


def _max_section(doc: dict[str, Any]) -> list[str]:
    p99 = doc["knobs"]["p99_ms"]
    declared = doc.get("autoscaling") and not doc.get("rate_records")  # else said above
    return [
        f"## Highest rate the 2 cores sustain (p99 <= {p99:g} ms, no error, >= 95% of the"
        " offered rate achieved)",
        "",
        f"{doc['knobs']['step_s']:g} s steps from {doc['knobs']['start_rate']:g} req/s,"
        " doubling then bisecting (kserve_gitops.base.ratesearch, the search of"
        " `make bench`); a failing step is measured once more. Generator CPU: the load"
        " test's processes over the step, % of one core.",
        "",
        *([_declared(doc["autoscaling"]), ""] if declared else []),
        cluster_rates.max_rate_table(doc["maxima"], p99),
        "",
    ]


def _declared(a: dict[str, Any]) -> str:
    cc = a["container_concurrency"] or "0 (unlimited)"
    return (
        f"Declared by environment {a['env']}: containerConcurrency {cc} (KServe's run: 8);"
        f" target-burst-capacity {a['target_burst_capacity']:g}; KPA target {a['target']:g}"
        f" per pod at {a['utilization_pct']:g}%."
    )


def _cold_section(starts: list[dict[str, float]], plots: str) -> list[str]:
    return [
        f"## Cold start from zero pods ({len(starts)} samples)",
        "",
        "Each: wait until the revision has no pod, then one prediction through the activator;"
        " phases from the pod's timestamps (whole seconds; images are local, nothing is pulled).",
        "",
        cluster_rates.cold_start_table(starts),
        "",
        f"![cold start samples]({plots}{PLOTS['cold_starts']})",
        "",
    ]


def _scaleout_section(doc: dict[str, Any], plots: str) -> list[str]:
    from kserve_gitops.bench import autoscaling, scaleout  # the record's words

    record, config = doc["scaleout"], autoscaling.Autoscaling(**doc["autoscaling"])
    return [
        "## Scale-out under a rising open-loop load",
        "",
        *scaleout.summary(record),
        *autoscaling.describe(config, int(doc["meta"]["machine"].get("cores", 2))),
        "",
        f"![replicas and latency over time]({plots}{PLOTS['scaleout']})",
        "",
    ]


# What each part of the benchmark adds to the record (kserve_gitops.bench.cluster.PARTS).
RECORD_KEYS = {
    "slo": "records",
    "rates": "rate_records",
    "max": "maxima",
    "cold": "cold_starts",
    "scaleout": "scaleout",
}
PART_NAMES = {
    "slo": "latency at the SLO rate",
    "rates": "KServe's rate table",
    "max": "highest rates",
    "cold": "cold starts",
    "scaleout": "scale-out",
}


def measured(doc: dict[str, Any]) -> list[str]:
    """The parts the record has data for (an older record has no meta.parts)."""
    return [p for p, key in RECORD_KEYS.items() if doc.get(key)]


def _intro(doc: dict[str, Any], parts: list[str]) -> list[str]:
    meta = doc["meta"]
    command = "kgops bench-cluster"  # an older record does not say which parts were asked
    if "parts" in meta:
        command += f" --env {meta['env']} --parts {','.join(meta['parts'])}"
    line = f"Generated by `make bench-cluster` (`{command}`) on {meta['when']}, env {meta['env']}"
    if not {"slo", "rates", "max"} & set(parts):
        return [line + "."]
    records = [*doc.get("records", []), *doc.get("rate_records", [])]
    activator = any(r["config"].startswith("activator") for r in records)
    return [
        line
        + ", latency from the scheduled send time"
        + (" (config/slo.yaml's rate)" if "slo" in parts else "")
        + ". Paths: `local` is the model served by `kgops serve` on this machine (what"
        " `make demo` measures); `service` is the revision's private Service through kube-proxy's"
        " rules to queue-proxy in the real predictor pod; `port-forward` is `kubectl"
        " port-forward` to the predictor pod (the report's path: API server and kubelet in the"
        " path; a 1 req/s keep-alive through the Service keeps the revision up)"
        + (
            "; `activator` is Knative's activator Service with the revision's headers while the"
            " revision has a pod (activator, then queue-proxy)."
            if activator or "activator" in (doc.get("maxima") or {})
            else "."
        )
    ]


def markdown(doc: dict[str, Any], plots: str = "") -> str:
    """The report of the parts the record has, and no others; `plots` is the plots' folder
    relative to where the text goes."""
    meta, parts = doc["meta"], measured(doc)
    machine = [
        *meta["machine"].items(),
        ("Load average (1, 5, 15 min)", f"start {meta['load_start']}; end {meta['load_end']}"),
    ]
    title = (
        "Cluster-path latency at the SLO rate"
        if "slo" in parts
        else "Cluster paths on the real node: " + ", ".join(PART_NAMES[p] for p in parts)
    )
    lines = [f"# {title}", "", *_intro(doc, parts), "", "## Machine", ""]
    lines += [*tables.markdown(machine, ("", "")), ""]
    if "slo" in parts:
        lines += [*_slo_section(doc), ""]
    if "rates" in parts:
        lines += _rate_section(doc)
    if "max" in parts:
        lines += _max_section(doc)
    if {"rates", "max"} & set(parts):
        lines += [f"![latency per rate per path]({plots}{PLOTS['rates']})", ""]
    if "cold" in parts:
        lines += _cold_section(doc["cold_starts"], plots)
    if "scaleout" in parts and doc.get("autoscaling"):
        lines += _scaleout_section(doc, plots)
    return "\n".join(lines).rstrip() + "\n"
