"""Scale-out under a rising open-loop load: the rate rises linearly from `start` to `end` req/s
over `seconds` through a cluster path the autoscaler sees (the activator or the revision's
Service, both through queue-proxy), while every second the revision's pods (Ready and all) and
the PodAutoscaler's desired and actual scale are sampled. Latency counts from each request's due
time (kserve_gitops.e2e.traffic), so the queueing while pods start is charged to the requests
that waited."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy
import psutil

from kserve_gitops.e2e import traffic
from kserve_gitops.e2e.paths import ClusterPaths, pod_ready
from kserve_gitops.serving import client

PA_KIND = "PodAutoscaler"


@dataclass(frozen=True)
class Ramp:
    start: float  # req/s
    end: float
    seconds: float

    def __post_init__(self) -> None:
        if not 0 < self.start <= self.end or self.seconds <= 0:
            raise ValueError(
                f"ramp {self.start:g} -> {self.end:g} req/s over {self.seconds:g}s: expected"
                " 0 < from <= to and a positive length"
            )

    def due(self, i: int) -> float:
        """When request i is due: the integral of the rate from 0 reaches i."""
        slope = (self.end - self.start) / self.seconds
        if slope == 0:
            return i / self.start
        return (math.sqrt(self.start**2 + 2 * slope * i) - self.start) / slope


def sample(paths: ClusterPaths, namespace: str, rev: str, at: float) -> dict[str, Any]:
    """The revision's pods (Ready and all) and its PodAutoscaler's scales, in one API call."""
    items = paths.get(
        "pods,podautoscalers", "-n", namespace, "-l", f"serving.knative.dev/revision={rev}"
    )["items"]
    pods = [i for i in items if i.get("kind") == "Pod"]
    pa = next((i.get("status") or {} for i in items if i.get("kind") == PA_KIND), {})
    return {
        "t": round(at, 2),
        "ready": sum(pod_ready(p) for p in pods),
        "pods": len(pods),
        "desired": pa.get("desiredScale"),
        "actual": pa.get("actualScale"),
    }


def per_second(outcomes: list[traffic.Outcome]) -> list[dict[str, float]]:
    """Per second the requests were due in: sent, failed, latency p50 and p99 (ms) of the
    answered (0 when none was)."""
    by: dict[int, list[traffic.Outcome]] = defaultdict(list)
    for o in outcomes:
        by[int(o.due_s)].append(o)
    rows = []
    for second in range(max(by, default=-1) + 1):
        inside = by.get(second, [])
        ms = [1000 * o.latency_s for o in inside if o.ok and o.latency_s is not None]
        p50, p99 = numpy.percentile(ms, [50, 99]) if ms else (0.0, 0.0)
        rows.append(
            {
                "t": second,
                "sent": len(inside),
                "failed": sum(not o.ok for o in inside),
                "p50_ms": round(float(p50), 2),
                "p99_ms": round(float(p99), 2),
            }
        )
    return rows


def _cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run(
    paths: ClusterPaths,
    model: str,
    namespace: str,
    path: str,
    ramp: Ramp,
    rows: client.Rows,
    timeout_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The ramp through `path`, sampled every second: the record `plot` and the report read."""
    url = paths.open(model, namespace, path)
    rev = paths.revision(model, namespace)
    load = traffic.OpenLoop(
        url,
        model,
        rows,
        ramp.end,
        paths.headers.get(path, {}),
        timeout_s,
        schedule=ramp.due,
        until_s=ramp.seconds,
    )
    samples = []
    log(f"scale-out: {ramp.start:g} -> {ramp.end:g} req/s over {ramp.seconds:g}s via {path}")
    cpu0 = _cpu_s()
    load.start()
    try:
        while load.now() < ramp.seconds:
            samples.append(sample(paths, namespace, rev, load.now()))
            s = samples[-1]
            log(f"  {s['t']:6.1f}s ready {s['ready']} pods {s['pods']} desired {s['desired']}")
            time.sleep(max(0.0, math.floor(load.now()) + 1 - load.now()))
    finally:  # a failed sample stops the load too
        outcomes = load.stop()
    wall = load.now()
    counts = traffic.counts(outcomes, set())
    return {
        "path": path,
        "revision": rev,
        "ramp": {"start": ramp.start, "end": ramp.end, "seconds": ramp.seconds},
        "samples": samples,
        "per_second": per_second(outcomes),
        "sent": counts.sent,
        "failed": counts.failed,
        # This process: the open-loop thread and the sampling (kubectl's own CPU is not in it).
        "generator_cpu_pct": round(100 * (_cpu_s() - cpu0) / wall, 1) if wall else 0.0,
    }


def summary(record: dict[str, Any]) -> list[str]:
    """The ramp in words: offered, the pods reached and when, latency and errors."""
    ramp, samples, secs = record["ramp"], record["samples"], record["per_second"]
    most = max((s["ready"] for s in samples), default=0)
    first = next((s["t"] for s in samples if s["ready"] == most), None)
    desired = [s["desired"] for s in samples if s["desired"] is not None]
    worst = max(secs, key=lambda r: r["p99_ms"], default=None)
    return [
        f"- Offered {ramp['start']:g} -> {ramp['end']:g} req/s over {ramp['seconds']:g} s via"
        f" `{record['path']}` (revision {record['revision']}): {record['sent']} requests,"
        f" {record['failed']} failed; generator {record['generator_cpu_pct']:g}% of one core.",
        f"- Ready pods: at most {most}"
        + (f", first reached at {first:g} s" if first is not None else "")
        + (
            f"; the PodAutoscaler's desired scale reached {max(desired)}"
            if desired
            else "; the PodAutoscaler's desired scale was not read"
        )
        + ".",
        (
            f"- Worst second: p99 {worst['p99_ms']:.1f} ms at {worst['t']} s"
            f" ({worst['failed']} failed in it)."
            if worst
            else "- No request was answered."
        ),
    ]
