"""Configurations measured in interleaved rounds, and what the rounds allow to be said.

A neighbour's burst on a shared machine spoils whichever measurement it falls on. Measuring
every configuration once per round, in an order that rotates between rounds, spreads such
bursts over the configurations; the median over the rounds keeps a spoiled round out of the
figure, and the spread (min-max, IQR) shows how far the rounds disagree. A comparison is made
round by round (A's figure over B's figure of the same round), and a verdict is given only
when every round's ratio lies on the same side of 1.0.

    result = rounds.run(configs, measure, 5, name=lambda c: c.name)
    result.spread("sklearnserver-tuned", "v2.avg_ms")         # Spread(median, min, max, IQR)
    result.ratio("sklearnserver-tuned", "mlserver-inprocess", "v2.max_rate")  # per round

`measure(config, round_no)` returns a Measurement: the figures compared (name -> number) and
any detail kept as is in the results. Free of Locust: the cluster-path benchmarks use it too.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

C = TypeVar("C")

DEFAULT_ROUNDS = 5
NO_VERDICT = "no verdict: rounds disagree"


def interleave(configs: Sequence[C], rounds: int) -> list[list[C]]:
    """The order of each round: round r starts with configuration r mod n and keeps the cyclic
    order, so that over n rounds every configuration runs once in every position."""
    if rounds < 1:
        raise ValueError(f"rounds: expected 1 or more, got {rounds}")
    n = len(configs)
    return [[configs[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


@dataclass(frozen=True)
class Spread:
    """Median of the rounds, their range and interquartile range."""

    n: int
    median: float
    low: float
    high: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def crosses(self, level: float = 1.0) -> bool:
        """True when the rounds lie on both sides of `level` (or one of them on it)."""
        return self.low <= level <= self.high

    def text(self, fmt: str = ".2f", unit: str = "") -> str:
        """`1.23 (1.10-1.40)`: the median, then min-max when the rounds differ."""
        median, low, high = (f"{v:{fmt}}" for v in (self.median, self.low, self.high))
        if self.n < 2 or low == high:  # no range to show at this precision
            return median + unit
        return f"{median}{unit} ({low}-{high})"


def spread(values: Sequence[float]) -> Spread:
    """The Spread of one figure over the rounds (quartiles: the inclusive method, so that two
    rounds give their own values and one round gives itself)."""
    if not values:
        raise ValueError("spread of no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Spread(len(ordered), statistics.median(ordered), ordered[0], ordered[-1], q1, q3)


def ratio_of(a: float, b: float) -> float:
    """a / b, with a zero b giving inf (or 1.0 when both are zero: nothing to tell apart)."""
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


@dataclass(frozen=True)
class Ratio:
    """A's figure over B's, round by round (rounds where either lacks the figure are left out)."""

    a: str
    b: str
    metric: str
    per_round: tuple[float, ...]

    @property
    def spread(self) -> Spread:
        return spread(self.per_round)

    def verdict(self, higher_is_better: bool) -> str:
        """Which is better in every round, or NO_VERDICT when the rounds' ratios cross 1.0."""
        if not self.per_round or self.spread.crosses(1.0):
            return NO_VERDICT
        a_better = (self.spread.low > 1.0) == higher_is_better
        return f"{self.a if a_better else self.b} better in every round"

    def text(self) -> str:
        """`x0.91 (x0.85-x0.97, 5 rounds)`."""
        if not self.per_round:
            return "no common rounds"
        s = self.spread
        rounds = f"{s.n} round{'s' if s.n != 1 else ''}"
        if s.low == s.high:
            return f"x{s.median:.2f} ({rounds})"
        return f"x{s.median:.2f} (x{s.low:.2f}-x{s.high:.2f}, {rounds})"


@dataclass
class Record:
    """One configuration in one round: when it ran, the load average then, its figures."""

    round: int
    config: str
    load_average: list[float]
    started: float
    seconds: float
    metrics: dict[str, float]
    detail: Any = None


@dataclass
class Measurement:
    metrics: Mapping[str, float]
    detail: Any = None


@dataclass
class Rounds:
    """The records of a run of rounds, in the order they were measured."""

    order: list[list[str]]
    records: list[Record] = field(default_factory=list)
    load_average_start: list[float] = field(default_factory=list)
    load_average_end: list[float] = field(default_factory=list)

    def values(self, config: str, metric: str) -> list[float]:
        """The figure of every round the configuration has it, in round order."""
        return [r.metrics[metric] for r in self._of(config) if metric in r.metrics]

    def spread(self, config: str, metric: str) -> Spread | None:
        values = self.values(config, metric)
        return spread(values) if values else None

    def ratio(self, a: str, b: str, metric: str, b_metric: str | None = None) -> Ratio:
        """a's `metric` over b's `b_metric` (default the same), round by round."""
        b_metric = b_metric or metric
        mine = {r.round: r.metrics[metric] for r in self._of(a) if metric in r.metrics}
        theirs = {r.round: r.metrics[b_metric] for r in self._of(b) if b_metric in r.metrics}
        common = sorted(mine.keys() & theirs.keys())
        return Ratio(a, b, metric, tuple(ratio_of(mine[n], theirs[n]) for n in common))

    def round_loads(self) -> list[float]:
        """The 1-minute load average at the start of each round (of the rounds that have it)."""
        first: dict[int, float] = {}
        for r in self.records:
            if r.load_average:
                first.setdefault(r.round, r.load_average[0])
        return [first[n] for n in sorted(first)]

    def _of(self, config: str) -> list[Record]:
        return sorted((r for r in self.records if r.config == config), key=lambda r: r.round)

    def to_json(self, detail: bool = True) -> dict[str, Any]:
        """JSON-ready; detail=False leaves each record's detail out (kept elsewhere)."""
        return {
            "order": self.order,
            "load_average_start": self.load_average_start,
            "load_average_end": self.load_average_end,
            "records": [{**vars(r), "detail": r.detail if detail else None} for r in self.records],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Rounds:
        return cls(
            order=[list(o) for o in doc["order"]],
            records=[Record(**r) for r in doc["records"]],
            load_average_start=list(doc.get("load_average_start", [])),
            load_average_end=list(doc.get("load_average_end", [])),
        )


def run(
    configs: Sequence[C],
    measure: Callable[[C, int], Measurement],
    rounds: int = DEFAULT_ROUNDS,
    *,
    name: Callable[[C], str] = str,
    log: Callable[[str], None] = print,
    loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    clock: Callable[[], float] = time.time,
) -> Rounds:
    """Measure every configuration once per round, in interleave's order. `name` gives the
    configuration's (unique) name in the records; `loadavg` and `clock` are read before each
    measurement, so that every record says how busy the machine was when it ran."""
    names = [name(c) for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be unique: {names}")
    orders = interleave(configs, rounds)
    result = Rounds(
        order=[[name(c) for c in order] for order in orders],
        load_average_start=list(loadavg()),
    )
    for number, order in enumerate(orders, start=1):
        log(
            f"round {number}/{rounds} (load average {loadavg()[0]:.2f}): "
            + ", ".join(name(c) for c in order)
        )
        for config in order:
            load, started = list(loadavg()), clock()
            got = measure(config, number)
            result.records.append(
                Record(
                    round=number,
                    config=name(config),
                    load_average=load,
                    started=started,
                    seconds=clock() - started,
                    metrics={k: float(v) for k, v in got.metrics.items()},
                    detail=got.detail,
                )
            )
    result.load_average_end = list(loadavg())
    return result
