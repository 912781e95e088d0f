"""KServe's benchmark table through the real node, and the cold start with its spread.

KServe's own benchmark (kserve/kserve test/benchmark/README.md) ran vegeta in-cluster against
sklearn-iris on 8 GKE nodes; its serverless rows (containerConcurrency 8) are the anchor each row
here is set beside. The cold start is sampled from zero pods through Knative's activator, split
into phases from the pod's own timestamps (whole seconds, as the API server keeps them)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tabulate import tabulate

from kserve_gitops.bench import rounds
from kserve_gitops.e2e.paths import ClusterPaths, PathError

# KServe's published rows: (mode, rate) -> (mean ms, p99 ms, success %).
KSERVE = {
    ("serverless", 5): (6.2, 7.6, 100.0),
    ("serverless", 50): (5.7, 6.8, 100.0),
    ("serverless", 500): (4.1, 5.6, 100.0),
    ("serverless", 1000): (399.0, 3700.0, 100.0),
    ("raw with HPA", 500): (1.4, 2.2, 100.0),
    ("raw with HPA", 1000): (8000.0, 20300.0, 93.7),
}
KSERVE_SERVERLESS = {rate: row for (mode, rate), row in KSERVE.items() if mode == "serverless"}
KSERVE_SOURCE = (
    "kserve/kserve test/benchmark/README.md: vegeta in-cluster, 8 GKE nodes, serverless, "
    "containerConcurrency 8"
)
RATE_FIGURES = (
    "avg_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "success_pct",
    "rps",
    "generator_cpu_pct",
)
MODEL_CONTAINER = "kserve-container"


@dataclass(frozen=True)
class RatePoint:
    path: str
    url: str
    rate: float

    @property
    def name(self) -> str:
        return f"{self.path}@{self.rate:g}"


def rate_table(result: rounds.Rounds, points: Sequence[RatePoint]) -> str:
    """Each path and rate: the median of the rounds [min-max] per figure, and KServe's row."""
    rows = []
    for p in points:
        cells = []
        for metric in RATE_FIGURES:
            s = result.spread(p.name, metric)
            cells.append("-" if s is None else f"{s.median:.2f} [{s.low:.2f}-{s.high:.2f}]")
        theirs = KSERVE_SERVERLESS.get(int(p.rate))
        ours = result.spread(p.name, "avg_ms")
        versus = "-"
        if theirs and ours:
            versus = f"{theirs[0]:g} / {theirs[1]:g} ms: ours {_versus(ours.median, theirs[0])}"
        rows.append([p.path, f"{p.rate:g}", *cells, versus])
    head = [
        "path",
        "req/s",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "success %",
        "achieved req/s",
        "generator CPU %",
        "KServe mean / p99 (serverless)",
    ]
    return tabulate(rows, head, tablefmt="github", disable_numparse=True)


def _versus(ours_ms: float, theirs_ms: float) -> str:
    ratio = ours_ms / theirs_ms
    return f"x{1 / ratio:.2f} faster" if ratio < 1 else f"x{ratio:.2f} slower"


def max_rate_table(maxima: dict[str, dict[str, Any]], p99_ms: float) -> str:
    """Per path: the highest rate found (ratesearch: p99 <= p99_ms, no error, >= 95% of the
    offered rate achieved), its figures, and KServe's 1000/s rows beside it."""
    rows = []
    for path, found in maxima.items():
        best, steps = found["max"], found["steps"]
        failing = sorted({s["rate"] for s in steps} - {s["rate"] for s in steps if s["pass"]})
        cells = (
            [
                f"{best['rate']:.0f}",
                f"{best['latency_ms']['avg']:.2f}",
                f"{best['latency_ms']['p99']:.2f}",
                f"{best['success_pct']:.2f}",
                f"{best['achieved_rps']:.1f}",
                f"{best['generator_cpu_pct']:.0f}",
            ]
            if best
            else [f"below {steps[0]['rate']:g}" if steps else "-", *["-"] * 5]
        )
        kserve = []
        for mode in ("serverless", "raw with HPA"):
            mean, p99, ok = KSERVE[(mode, 1000)]
            versus = (
                f"; ours at {best['rate']:.0f}/s: p99 {_versus(best['latency_ms']['p99'], p99)}"
                if best
                else ""
            )
            kserve.append(f"{mode}: {mean:g} / {p99:g} ms, {ok:g}%{versus}")
        rows.append([path, *cells, f"{failing[0]:.0f}" if failing else "none", "; ".join(kserve)])
    head = [
        "path",
        f"max req/s (p99 <= {p99_ms:g} ms)",
        "mean ms",
        "p99 ms",
        "success %",
        "achieved req/s",
        "generator CPU %",
        "first failing req/s",
        "KServe at 1000/s: mean / p99, success",
    ]
    return tabulate(rows, head, tablefmt="github", disable_numparse=True)


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def phases(pod: dict[str, Any], requested: float) -> dict[str, float]:
    """Seconds of each phase of a cold start, from the pod's timestamps (whole seconds, so each
    phase is within a second; the request time is taken down to the second too): the autoscaler and
    the Deployment (request to pod created), the scheduler, the sandbox and container start
    (images are local: nothing is pulled), then the model load and readiness probe."""
    conditions = {
        c["type"]: _time(c["lastTransitionTime"]) for c in pod["status"].get("conditions") or []
    }
    created = _time(pod["metadata"]["creationTimestamp"])
    requested = math.floor(requested)  # to the stamps' resolution: no phase below zero
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == MODEL_CONTAINER)
    started = _time(status["state"]["running"]["startedAt"])
    return {
        "request -> pod created": created - requested,
        "created -> scheduled": conditions["PodScheduled"] - created,
        "scheduled -> model server started": started - conditions["PodScheduled"],
        "started -> Ready (model loaded, probe)": conditions["Ready"] - started,
    }


def cold_starts(
    paths: ClusterPaths,
    model: str,
    namespace: str,
    rows: Sequence[Sequence[float]],
    samples: int,
    timeout_s: float,
    log: Callable[[str], None],
) -> list[dict[str, float]]:
    """`samples` cold starts, each from zero pods: seconds to the first answer, and phases."""
    out = []
    for n in range(samples):
        log(f"cold start {n + 1}/{samples}: waiting for zero pods")
        got, took = paths.cold_start(model, namespace, rows, timeout_s)
        rev = paths.revision(model, namespace)
        pods = paths.get("pods", "-n", namespace, "-l", f"serving.knative.dev/revision={rev}")
        if not pods["items"]:
            raise PathError(f"cold start {n + 1}: no pod of {rev} after the answer")
        requested = float(paths.measures["cold_start_requested"])
        sample = {"first answer": took, **phases(pods["items"][0], requested)}
        log(f"  first answer {took:.2f}s: {got}")
        out.append(sample)
    return out


def cold_start_table(samples: list[dict[str, float]]) -> str:
    rows = []
    for phase in samples[0] if samples else []:
        values = [s[phase] for s in samples]
        rows.append(
            [
                phase,
                f"{statistics.median(values):.2f}",
                f"{min(values):.2f}",
                f"{max(values):.2f}",
                " ".join(f"{v:.1f}" for v in values),
            ]
        )
    head = ["phase", "median s", "min s", "max s", "each sample s"]
    return tabulate(rows, head, tablefmt="github", disable_numparse=True)
