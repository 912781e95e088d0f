"""A made-up record of `kgops bench-cluster` (benchmarks/cluster-path.json's shape), for the
report and plot tests."""

from __future__ import annotations

from typing import Any

from kserve_gitops.bench import rounds

AUTOSCALING = {
    "env": "dev",
    "metric": "concurrency",
    "container_concurrency": 0,
    "target": 10.0,
    "target_source": "the predictor's scaleTarget",
    "utilization_pct": 70.0,
    "target_burst_capacity": 211.0,
    "stable_window_s": 60.0,
    "panic_window_pct": 10.0,
    "panic_threshold_pct": 200.0,
    "max_scale_up_rate": 1000.0,
    "min_replicas": 0,
    "max_replicas": 1,
    "pod_cpu_request_m": 125.0,
    "model_cpu_request_m": 100.0,
    "values_file": "environments/dev/models/sklearn-iris.yaml",
}


def _records(avg: dict[str, list[float]]) -> list[dict[str, Any]]:
    def measure(name: str, n: int) -> rounds.Measurement:
        a = avg[name][n - 1]
        figures = {"avg_ms": a, "p50_ms": a * 0.8, "p95_ms": a * 2, "p99_ms": a * 3}
        return rounds.Measurement(
            {**figures, "max_ms": a * 5, "rps": 80, "errors": 0, "success_pct": 100.0}
            | {"generator_cpu_pct": 12.0}
        )

    result = rounds.run(
        list(avg), measure, 3, log=lambda _: None, loadavg=lambda: (1.0, 1.0, 1.0), clock=lambda: 0
    )
    return [vars(r) for r in result.records]


def point(rate: float, p99: float, ok: bool, attempt: int = 1) -> dict[str, Any]:
    return {
        "rate": rate,
        "achieved_rps": rate,
        "latency_ms": {"avg": p99 / 3, "p50": p99 / 4, "p95": p99 / 2, "p99": p99, "max": p99},
        "errors": 0,
        "success_pct": 100.0,
        "generator_cpu_pct": 55.0,
        "pass": ok,
        "attempt": attempt,
    }


def record(**over: Any) -> dict[str, Any]:
    best = point(800, 31.0, True)
    doc = {
        "meta": {
            "when": "2026-12-07 21:00 UTC",
            "rounds": 3,
            "duration": 20.0,
            "rate": 80.0,
            "rate_rounds": 3,
            "rate_duration": 15.0,
            "env": "dev",
            "parts": ["slo", "rates", "max", "cold", "scaleout"],
            "machine": {"cpu": "test cpu", "cores": 2},
            "load_start": "1.00, 1.00, 1.00",
            "load_end": "2.00, 2.00, 2.00",
        },
        "records": _records(
            {
                "local": [2, 3, 4],
                "service": [5, 6, 9],
                "port-forward": [8, 8, 8],
                "activator": [6, 7, 8],
            }
        ),
        "rate_records": _records(
            {f"{p}@{r}": [r / 100 + 1] * 3 for r in (5, 500) for p in ("service", "activator")}
        ),
        "knobs": {"step_s": 10.0, "start_rate": 100.0, "p99_ms": 50.0},
        "maxima": {
            "service": {"max": best, "steps": [point(800, 31.0, True), point(1600, 90, False)]},
            "activator": {"max": None, "steps": [point(100, 70, False), point(100, 71, False, 2)]},
        },
        "cold_starts": [{"first answer": 9.0 + n, "created -> scheduled": 0.0} for n in range(5)],
        "autoscaling": AUTOSCALING,
        "scaleout": {
            "path": "activator",
            "revision": "sklearn-iris-predictor-00001",
            "ramp": {"start": 10.0, "end": 40.0, "seconds": 3.0},
            "workers": 2,
            "samples": [
                {"t": 0.1, "ready": 0, "pods": 1, "desired": 1, "actual": 0},
                {"t": 1.0, "ready": 1, "pods": 1, "desired": 1, "actual": 1},
                {"t": 2.0, "ready": 1, "pods": 1, "desired": None, "actual": None},
            ],
            "per_second": [
                {"t": 0, "completed": 11, "failed": 0, "p50_ms": 900.0, "p99_ms": 1500.0},
                {"t": 1, "completed": 25, "failed": 2, "p50_ms": 3.0, "p99_ms": 9.0},
                {"t": 2, "completed": 36, "failed": 0, "p50_ms": 2.0, "p99_ms": 6.0},
            ],
            "sent": 72,
            "failed": 2,
            "generator_cpu_pct": 14.5,
        },
    }
    return doc | over


def scaleout_record() -> dict[str, Any]:
    """What `kgops bench-cluster --env staging --parts scaleout` writes: the scale-out alone,
    with the machine, its load average and staging's declared autoscaling."""
    doc = record()
    meta = {k: doc["meta"][k] for k in ("machine", "load_start", "load_end")}
    autoscaling = AUTOSCALING | {
        "env": "staging",
        "min_replicas": 1,
        "max_replicas": 4,
        "pod_cpu_request_m": 275.0,
        "model_cpu_request_m": 250.0,
        "values_file": "environments/staging/models/sklearn-iris.yaml",
    }
    return {
        "meta": {"env": "staging", "parts": ["scaleout"], "when": "2026-12-07 22:10 UTC", **meta},
        "autoscaling": autoscaling,
        "scaleout": doc["scaleout"],
    }
