"""Open-loop pacing for Locust users and latency measured from each request's scheduled time.

Request i is due at t0 + i/rate whatever the server does (or, ramped, when the rate's integral
reaches i: kserve_gitops.base.arrivals). Users claim the next due slot, sleep
until it and send; when every user is stuck on a stalled server, the slots that fall due meanwhile
are sent late and their latency still counts from the due time. That is how this harness avoids
coordinated omission: no after-the-fact HdrHistogram correction, the measurement itself starts at
the scheduled time. Locust's own stats keep the service time (send to response).
"""

from __future__ import annotations

import gevent
from gevent.event import Event

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from kserve_gitops.base.arrivals import Arrivals

# gevent's libev loop wakes timers ~0.7 ms late (epoll timeouts are whole milliseconds): aim
# that much early so the send lag, which counts in every latency, is not the timer's. A request
# that still goes out a little early is timed from its actual send (no busy-wait: at high rates
# spinning would take CPU from the server on the same cores).
TIMER_LATE_S = 0.0007
# Microsecond resolution up to 60 s, 3 significant digits.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 60_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def default_users(rate: float) -> int:
    """Enough users that half a second of stalled responses still leaves users to send on time."""
    return max(16, math.ceil(rate / 2))


@dataclass
class Recorder:
    """Scheduled-time latency, service time and a per-second timeline, all in microseconds."""

    scheduled: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)
    # Send lag (actual minus due send time): the generator's own delay, or users all busy.
    lag: HdrHistogram = field(default_factory=new_histogram)
    requests: int = 0
    failures: int = 0
    scheduled_sum_us: int = 0
    service_sum_us: int = 0
    # Timeline: latency by the second the request was due, completions by the second they ended.
    latency_by_second: dict[int, HdrHistogram] = field(
        default_factory=lambda: defaultdict(new_histogram)
    )
    done_by_second: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    failed_by_second: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # Timeline seconds changed since the last wire() call: a worker sends only those.
    dirty: set[int] = field(default_factory=set)

    def record(self, due_s: float, sent_s: float, end_s: float, ok: bool) -> None:
        """Times are seconds since the plan's start (monotonic)."""
        start_s = min(due_s, sent_s)  # the due time, or the send if the timer fired early
        scheduled_us = max(_LOWEST_US, round((end_s - start_s) * 1e6))
        service_us = max(_LOWEST_US, round((end_s - sent_s) * 1e6))
        self.scheduled.record_value(min(scheduled_us, _HIGHEST_US))
        self.service.record_value(min(service_us, _HIGHEST_US))
        self.lag.record_value(min(max(_LOWEST_US, round((sent_s - start_s) * 1e6)), _HIGHEST_US))
        self.scheduled_sum_us += scheduled_us
        self.service_sum_us += service_us
        self.requests += 1
        self.latency_by_second[int(due_s)].record_value(min(scheduled_us, _HIGHEST_US))
        self.done_by_second[int(end_s)] += 1
        self.dirty.update((int(due_s), int(end_s)))
        if not ok:
            self.failures += 1
            self.failed_by_second[int(end_s)] += 1

    def add(self, other: Recorder) -> None:
        """Merge another generator's recording into this one (same plan start, so same seconds)."""
        for mine, theirs in (
            (self.scheduled, other.scheduled),
            (self.service, other.service),
            (self.lag, other.lag),
        ):
            mine.add(theirs)
        self.requests += other.requests
        self.failures += other.failures
        self.scheduled_sum_us += other.scheduled_sum_us
        self.service_sum_us += other.service_sum_us
        for second, hist in other.latency_by_second.items():
            self.latency_by_second[second].add(hist)
        for second, n in other.done_by_second.items():
            self.done_by_second[second] += n
        for second, n in other.failed_by_second.items():
            self.failed_by_second[second] += n

    def wire(self, all_seconds: bool = False) -> dict[str, Any]:
        """JSON-able state (histograms HdrHistogram-encoded) with the timeline seconds changed
        since the last call, or all of them; from_wire() on the receiving side."""
        seconds = self.dirty
        if all_seconds:
            seconds = set(self.latency_by_second) | set(self.done_by_second)
        doc = {
            "requests": self.requests,
            "failures": self.failures,
            "scheduled_sum_us": self.scheduled_sum_us,
            "service_sum_us": self.service_sum_us,
            "scheduled": self.scheduled.encode().decode(),
            "service": self.service.encode().decode(),
            "lag": self.lag.encode().decode(),
            "seconds": {
                str(s): [
                    _encode(self.latency_by_second.get(s)),
                    self.done_by_second.get(s, 0),
                    self.failed_by_second.get(s, 0),
                ]
                for s in sorted(seconds)
            },
        }
        self.dirty = set()
        return doc

    @classmethod
    def from_wire(cls, doc: dict[str, Any], seconds: dict[str, list[Any]]) -> Recorder:
        """The recorder a wire() document describes; `seconds` holds every timeline second
        received so far (later documents replace a second's row)."""
        rec = cls(
            scheduled=HdrHistogram.decode(doc["scheduled"]),
            service=HdrHistogram.decode(doc["service"]),
            lag=HdrHistogram.decode(doc["lag"]),
            requests=doc["requests"],
            failures=doc["failures"],
            scheduled_sum_us=doc["scheduled_sum_us"],
            service_sum_us=doc["service_sum_us"],
        )
        for key, (hist, done, failed) in seconds.items():
            second = int(key)
            if hist:
                rec.latency_by_second[second] = HdrHistogram.decode(hist)
            if done:
                rec.done_by_second[second] = done
            if failed:
                rec.failed_by_second[second] = failed
        return rec


def _encode(hist: HdrHistogram | None) -> str:
    return hist.encode().decode() if hist is not None and hist.get_total_count() else ""


@dataclass(frozen=True)
class Share:
    """Generator `index` of `count` sends global slots index, index + count, ...: the shares of
    the workers of a distributed run interleave, so their total is exactly the plan's rate."""

    index: int = 0
    count: int = 1

    def slots(self, total: int) -> int:
        """How many of the first `total` global slots are this share's."""
        return len(range(self.index, total, self.count))


class Plan:
    """The arrival schedule of one run: `total` requests at `rate`/s, fixed or ramped (total
    None: until stopped), or this generator's `share` of it (claimed and sent count this share's
    slots only)."""

    def __init__(
        self,
        rate: float | Arrivals,
        total: int | None,
        lead_s: float = 0.0,
        *,
        share: Share = Share(),
        wall_t0: float | None = None,
    ) -> None:
        self.arrivals = Arrivals.of(rate)
        self.total = total
        self.share = share
        # Slot 0 is due lead_s from now (every user spawns first), or at the wall-clock time a
        # distributed run's master chose for every worker.
        if wall_t0 is None:
            wall_t0 = time.time() + lead_s
        self.wall_t0 = wall_t0
        self.t0 = time.perf_counter() + (wall_t0 - time.time())
        self.claimed = 0
        self.sent = 0
        # Send lag (actual - due) of the last second of sends: how far behind the end was.
        self.recent_lags: deque[float] = deque(
            maxlen=max(1, math.ceil(self.arrivals.peak / share.count))
        )
        self.last_end_s = 0.0
        self.recorder = Recorder()
        self.finished = Event()
        self._stopped = False

    def now(self) -> float:
        """Seconds since t0 (negative before the first slot)."""
        return time.perf_counter() - self.t0

    @property
    def planned(self) -> int | None:
        """This share's slots (None: unbounded)."""
        return None if self.total is None else self.share.slots(self.total)

    def claim(self) -> float | None:
        """The due time (seconds since t0) of the next unclaimed slot; None once the plan ends."""
        slot = self.share.index + self.claimed * self.share.count
        if self._stopped or (self.total is not None and slot >= self.total):
            return None
        self.claimed += 1
        return self.arrivals.due(slot)

    def wait_until(self, due_s: float) -> float:
        """Sleep until the slot is due; returns the actual send time (seconds since t0)."""
        delay = due_s - self.now() - TIMER_LATE_S
        if delay > 0:
            gevent.sleep(delay)
        sent = self.now()
        self.sent += 1
        self.recent_lags.append(max(0.0, sent - due_s))
        return sent

    def record(self, due_s: float, sent_s: float, end_s: float, ok: bool) -> None:
        """One finished request; times are seconds since t0 (see now())."""
        self.last_end_s = max(self.last_end_s, end_s)
        self.recorder.record(due_s, sent_s, end_s, ok)
        if self.outstanding == 0 and self._exhausted():
            self.finished.set()

    @property
    def outstanding(self) -> int:
        """Claimed requests not recorded yet: waiting for their slot or in flight."""
        return self.claimed - self.recorder.requests

    def stop(self) -> None:
        """Claim nothing more (in-flight requests still complete)."""
        self._stopped = True
        if self.outstanding == 0:
            self.finished.set()

    def _exhausted(self) -> bool:
        return self._stopped or (self.planned is not None and self.claimed >= self.planned)

    def behind_s(self) -> float:
        """How far behind schedule the sends are: the median lag of the last second of sends,
        when over one of this share's arrival intervals (timer jitter is not being behind)."""
        lags = sorted(self.recent_lags)
        behind = lags[len(lags) // 2] if lags else 0.0
        return behind if behind > self.share.count / self.arrivals.rate_at(self.now()) else 0.0

    def achieved_rate(self) -> float:
        """Successful responses per second of the send window (see achieved_rate())."""
        successes = self.recorder.requests - self.recorder.failures
        offered = self.claimed * self.share.count
        return achieved_rate(successes, offered, self.arrivals, self.behind_s())


def achieved_rate(successes: int, offered: int, rate: float | Arrivals, behind_s: float) -> float:
    """Successful responses per second of the send window.

    The window is the planned one (until the last offered slot is due: offered / rate at a fixed
    rate), stretched by how far behind schedule the sends were at the end. A generator or a
    server that falls behind lowers the rate; one late request or timer jitter does not.
    """
    window = Arrivals.of(rate).due(offered) + behind_s
    return successes / window if successes and window > 0 else 0.0


def summarize(histogram: HdrHistogram, total_us: int, count: int) -> dict[str, float]:
    """avg/p50/p95/p99/max in milliseconds (avg from the exact sum, percentiles from HDR)."""
    if not count:
        return {k: 0.0 for k in ("avg", "min", "p50", "p95", "p99", "max")}
    pct = histogram.get_percentile_to_value_dict([50, 95, 99])
    return {
        "avg": total_us / count / 1000,
        "min": histogram.get_min_value() / 1000,
        "p50": pct[50] / 1000,
        "p95": pct[95] / 1000,
        "p99": pct[99] / 1000,
        "max": histogram.get_max_value() / 1000,
    }
