"""The max-rate search every benchmark shares (base.ratesearch), on synthetic load points: the
pass rule, the doubling then bisecting, and the retry of a failing step."""

from __future__ import annotations

from collections.abc import Callable

from kserve_gitops.base import ratesearch
from kserve_gitops.base.ratesearch import Knobs, passes


def point(rate: float, p99: float = 10.0, errors: int = 0, achieved: float | None = None) -> dict:
    return {
        "rate": rate,
        "achieved_rps": rate if achieved is None else achieved,
        "latency_ms": {"p99": p99},
        "errors": errors,
        "generator_cpu_pct": 20.0,
    }


def test_each_criterion_fails_a_point_on_its_own() -> None:
    assert passes(point(100), 50)
    assert passes(point(100, p99=50.0), 50)  # on the limit passes
    assert not passes(point(100, p99=50.01), 50)
    assert not passes(point(100, errors=1), 50)
    assert passes(point(100, achieved=95.0), 50)
    assert not passes(point(100, achieved=94.9), 50)


def server(capacity: float, calls: list[float]) -> Callable[[float, float], dict]:
    """p99 within the limit up to `capacity` req/s, far above it beyond."""

    def measure_at(rate: float, _seconds: float) -> dict:
        calls.append(rate)
        return point(rate, p99=5.0 if rate <= capacity else 400.0)

    return measure_at


def test_doubles_then_bisects_to_within_the_resolution() -> None:
    calls: list[float] = []
    best, steps = ratesearch.search(server(1000, calls), Knobs(), lambda _: None, pause_s=0)
    assert best is not None and 1000 / 1.15 <= best["rate"] <= 1000
    assert calls[:4] == [100, 200, 400, 800]  # doubling from the start rate
    assert calls[4:6] == [1600, 1600]  # a failing step is measured once more
    failed = [s["rate"] for s in steps if not s["pass"]]
    assert min(failed) / best["rate"] <= 1.15  # bisected until pass and fail are close
    assert all(s["attempt"] in (1, 2) for s in steps)


def test_a_retried_step_that_passes_counts_as_a_pass() -> None:
    flaky = iter([point(100, p99=80.0), point(100)] + [point(r) for r in (200, 400)])
    best, steps = ratesearch.search(
        lambda _r, _s: next(flaky), Knobs(max_rate=400), lambda _: None, pause_s=0
    )
    assert [(s["rate"], s["pass"], s["attempt"]) for s in steps] == [
        (100, False, 1),
        (100, True, 2),
        (200, True, 1),
        (400, True, 1),
    ]
    assert best is not None and best["rate"] == 400  # stops at the ceiling


def test_nothing_passes_below_the_start_rate() -> None:
    best, steps = ratesearch.search(server(10, []), Knobs(), lambda _: None, pause_s=0)
    assert best is None and len(steps) == 2  # the start rate, failed twice
