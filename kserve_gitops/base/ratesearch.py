"""The search for the highest open-loop arrival rate that passes: double the rate until a step
fails, then bisect geometrically between the last pass and the first fail. One search for every
benchmark (the local server, the load generator, the runtimes, the cluster paths): each passes
its own `measure_at(rate, seconds)`, which returns a point with the figures `passes` reads."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Point = dict[str, Any]


@dataclass(frozen=True)
class Knobs:
    fixed_s: float = 10.0
    step_s: float = 5.0
    p99_ms: float = 50.0
    start_rate: float = 100.0
    max_rate: float = 6400.0
    resolution: float = 1.15  # bisect until failing/passing rate is below this ratio
    max_steps: int = 16  # measurements, retries included


def passes(point: Point, p99_ms: float) -> bool:
    """No error, p99 (from the scheduled send time) within the limit, >= 95% of the offered rate
    achieved."""
    return (
        point["errors"] == 0
        and point["latency_ms"]["p99"] <= p99_ms
        and point["achieved_rps"] >= 0.95 * point["rate"]
    )


def _line(point: Point, ok: bool) -> str:
    cpu = f", generator {point['generator_cpu_pct']:3.0f}% cpu"
    if point.get("server_cpu_pct") is not None:
        cpu += f", server {point['server_cpu_pct']:3.0f}%"
    return (
        f"    {point['rate']:7.0f} req/s: p99 {point['latency_ms']['p99']:8.2f} ms, achieved "
        f"{point['achieved_rps']:7.1f}, errors {point['errors']}{cpu}"
        f" -> {'pass' if ok else 'fail'}"
    )


def search(
    measure_at: Callable[[float, float], Point],
    knobs: Knobs,
    log: Callable[[str], None],
    pause_s: float = 0.5,
) -> tuple[Point | None, list[Point]]:
    """(the highest passing point or None, every step measured); `pause_s` lets the server
    drain between steps."""
    steps: list[Point] = []
    best: Point | None = None
    low, high, rate = 0.0, math.inf, knobs.start_rate
    while len(steps) < knobs.max_steps:
        # A failing step is measured once more: on a shared machine one neighbour's burst
        # can break a 5 s p99. Both attempts are kept in the results.
        for attempt in (1, 2):
            point = measure_at(rate, knobs.step_s)
            ok = passes(point, knobs.p99_ms)
            steps.append({**point, "pass": ok, "attempt": attempt})
            log(_line(point, ok))
            if ok:
                break
        if ok:
            low, best = rate, point
        else:
            high = rate
        if high == math.inf:
            if rate >= knobs.max_rate:
                break
            rate = min(rate * 2, knobs.max_rate)
        elif low == 0 or high / low <= knobs.resolution:
            break
        else:
            rate = round(math.sqrt(low * high) / 10) * 10
        time.sleep(pause_s)
    return best, steps
