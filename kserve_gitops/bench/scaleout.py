"""Scale-out under a rising open-loop load: the Locust load test (`kgops loadtest --ramp-to`,
with worker processes so the generator is not the limit) raises the arrival rate linearly from
`start` to `end` req/s over `seconds` through a cluster path the autoscaler sees (the activator or
the revision's Service, both through queue-proxy), while every second the revision's pods (Ready
and all) and the PodAutoscaler's desired and actual scale are sampled. Latency counts from each
request's scheduled time, so the queueing while pods start is charged to the requests that
waited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kserve_gitops.base.arrivals import Arrivals
from kserve_gitops.base.tools import Runner
from kserve_gitops.bench import cluster_load
from kserve_gitops.e2e.paths import ClusterPaths, pod_ready

PA_KIND = "PodAutoscaler"


def ramp(start: float, end: float, seconds: float) -> Arrivals:
    if not 0 < start <= end or seconds <= 0:
        raise ValueError(
            f"ramp {start:g} -> {end:g} req/s over {seconds:g}s: expected"
            " 0 < from <= to and a positive length"
        )
    return Arrivals(start, end, seconds)


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


def per_second(timeline: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The load test's timeline: per second, the requests completed and failed in it, and the
    latency p50 and p99 (ms) of the requests due in it (0 when none was)."""
    keys = ("t", "completed", "failed", "p50_ms", "p99_ms")
    return [{k: row[k] for k in keys} for row in timeline]


class Sampler:
    """Samples the revision every second, in a thread, until stopped; `t` is Unix time until
    the load test says when its first slot was due."""

    def __init__(self, paths: ClusterPaths, namespace: str, rev: str) -> None:
        self.paths, self.namespace, self.rev = paths, namespace, rev
        self.samples: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                self.samples.append(sample(self.paths, self.namespace, self.rev, started))
            except Exception as exc:  # reported after the load test, which it must not stop
                self.error = exc
                return
            self._stop.wait(max(0.0, 1.0 - (time.time() - started)))


def run(
    paths: ClusterPaths,
    runner: Runner,
    env: str,
    model: str,
    namespace: str,
    path: str,
    arrivals: Arrivals,
    workers: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The ramp through `path`, sampled every second: the record `plot` and the report read."""
    url = paths.open(model, namespace, path)
    rev = paths.revision(model, namespace)
    target = cluster_load.Target(path, url, tuple(paths.headers.get(path, {}).items()))
    log(f"scale-out: {arrivals.describe()} via {path}, {workers} Locust worker processes")
    with Sampler(paths, namespace, rev) as sampler:
        doc = cluster_load.summary(
            runner, target, env, arrivals, arrivals.ramp_s, model, workers=workers
        )
    if sampler.error is not None:
        raise sampler.error
    t0 = doc["load"]["first_slot_at"]
    samples = [s | {"t": round(s["t"] - t0, 2)} for s in sampler.samples]
    for s in samples:
        log(f"  {s['t']:6.1f}s ready {s['ready']} pods {s['pods']} desired {s['desired']}")
    requests = doc["requests"]
    return {
        "path": path,
        "revision": rev,
        "ramp": {"start": arrivals.rate, "end": arrivals.end_rate, "seconds": arrivals.ramp_s},
        "workers": workers,
        "samples": samples,
        "per_second": per_second(doc["timeline"]),
        "sent": requests["completed"] + requests["unfinished"],
        "failed": requests["failures"] + requests["unfinished"],
        "generator_cpu_pct": round(cluster_load.generator_cpu_pct(doc), 1),
    }


def _first(samples: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> float | None:
    return next((s["t"] for s in samples if s["t"] >= 0 and test(s)), None)


def summary(record: dict[str, Any]) -> list[str]:
    """The ramp in words: offered, when the KPA asked for more pods and at what offered rate,
    when they were Ready, latency and errors."""
    ramp, samples, secs = record["ramp"], record["samples"], record["per_second"]
    arrivals = Arrivals(ramp["start"], ramp["end"], ramp["seconds"])
    most = max((s["ready"] for s in samples), default=0)
    ready_at = _first(samples, lambda s: s["ready"] == most)
    # From slot 0 on: what the autoscaler did before the load does not count.
    desired = [s["desired"] for s in samples if s["desired"] is not None and s["t"] >= 0]
    worst = max(secs, key=lambda r: r["p99_ms"], default=None)
    lines = [
        f"- Offered {ramp['start']:g} -> {ramp['end']:g} req/s over {ramp['seconds']:g} s via"
        f" `{record['path']}` (revision {record['revision']}): {record['sent']} requests,"
        f" {record['failed']} failed; Locust, {record['workers']} worker processes and their"
        f" master, {record['generator_cpu_pct']:g}% of one core in all.",
    ]
    if desired:
        start, top = desired[0], max(desired)
        rose = _first(samples, lambda s: (s["desired"] or 0) > start)
        topped = _first(samples, lambda s: s["desired"] == top)
        if rose is not None and topped is not None:
            lines.append(
                f"- The PodAutoscaler asked for more than {start} pod(s) at {rose:g} s (offered"
                f" {arrivals.rate_at(rose):.0f} req/s then) and for {top} at {topped:g} s."
            )
        else:
            lines.append(f"- The PodAutoscaler's desired scale stayed at {start}.")
    else:
        lines.append("- The PodAutoscaler's desired scale was not read.")
    if ready_at is not None:
        lines.append(f"- Ready pods: at most {most}, first reached at {ready_at:g} s.")
    lines.append(
        f"- Worst second: p99 {worst['p99_ms']:.1f} ms at {worst['t']} s"
        f" ({worst['failed']} failed in it)."
        if worst
        else "- No request was answered."
    )
    return lines
