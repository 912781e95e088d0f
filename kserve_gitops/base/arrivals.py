"""An open-loop arrival schedule: when request i is due, whatever the server does.

A fixed rate (request i at i/rate), or a rate that changes linearly from `rate` to `end_rate`
over `ramp_s` seconds and then holds `end_rate`: request i is due when the integral of the rate
from 0 reaches i. The Locust load test (kserve_gitops.load) and the e2e's own generator
(kserve_gitops.e2e.traffic) both pace by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arrivals:
    rate: float  # req/s at 0
    end_rate: float | None = None  # req/s from ramp_s on; None: a fixed rate
    ramp_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate {self.rate:g} req/s: expected a positive rate")
        if self.end_rate is not None and not (self.end_rate > 0 and self.ramp_s > 0):
            raise ValueError(
                f"ramp {self.rate:g} -> {self.end_rate:g} req/s over {self.ramp_s:g}s:"
                " expected a positive end rate and a positive length"
            )

    @classmethod
    def of(cls, rate: float | Arrivals) -> Arrivals:
        return rate if isinstance(rate, Arrivals) else cls(rate)

    @property
    def ramped(self) -> bool:
        return self.end_rate is not None

    @property
    def peak(self) -> float:
        return max(self.rate, self.end_rate or self.rate)

    @property
    def _slope(self) -> float:
        return 0.0 if self.end_rate is None else (self.end_rate - self.rate) / self.ramp_s

    @property
    def _ramp_slots(self) -> float:
        """The (fractional) number of arrivals the ramp holds."""
        return 0.0 if self.end_rate is None else (self.rate + self.end_rate) / 2 * self.ramp_s

    def rate_at(self, t: float) -> float:
        if self.end_rate is None or t >= self.ramp_s:
            return self.end_rate or self.rate
        return self.rate + self._slope * max(t, 0.0)

    def integral(self, t: float) -> float:
        """Arrivals due in [0, t]: the rate's integral."""
        t = max(t, 0.0)
        if self.end_rate is None:
            return self.rate * t
        if t <= self.ramp_s:
            return self.rate * t + self._slope * t * t / 2
        return self._ramp_slots + self.end_rate * (t - self.ramp_s)

    def due(self, i: int) -> float:
        """Seconds from slot 0 to slot i's due time."""
        if self.end_rate is None:
            return i / self.rate
        if i > self._ramp_slots:
            return self.ramp_s + (i - self._ramp_slots) / self.end_rate
        slope = self._slope
        if slope == 0:
            return i / self.rate
        return (math.sqrt(self.rate**2 + 2 * slope * i) - self.rate) / slope

    def due_by(self, t: float) -> int:
        """How many slots are due at or before t (slot 0 is due at 0)."""
        if t < 0:
            return 0
        # A hair of tolerance: the float integral at slot i's own due time can fall just short.
        return math.floor(self.integral(t) + 1e-9) + 1

    def planned(self, seconds: float) -> int:
        """The requests of a run of `seconds` (at least one)."""
        return max(1, round(self.integral(seconds)))

    def describe(self) -> str:
        if self.end_rate is None:
            return f"{self.rate:g} req/s"
        return f"{self.rate:g} -> {self.end_rate:g} req/s over {self.ramp_s:g}s"

    def wire(self) -> dict[str, Any]:
        return {"rate": self.rate, "end_rate": self.end_rate, "ramp_s": self.ramp_s}

    @classmethod
    def from_wire(cls, doc: dict[str, Any]) -> Arrivals:
        return cls(doc["rate"], doc.get("end_rate"), doc.get("ramp_s", 0.0))
