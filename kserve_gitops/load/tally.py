"""Each generator's cumulative counts and histograms, and one run's totals across generators.

A generator is the local process or one Locust worker. Workers send their tally to the master
(HdrHistogram-encoded, JSON-able); the master keeps the latest per worker and merges them, so a
message lost or repeated changes nothing and a worker that disappears keeps what it reported.
"""

from __future__ import annotations

from kserve_gitops.load import openloop

import math
from dataclasses import dataclass, field
from typing import Any

from kserve_gitops.base.arrivals import Arrivals
from kserve_gitops.repo import slo


@dataclass
class Tally:
    """One generator's state in one run."""

    source: str  # a worker's client id, or "local"
    share: openloop.Share
    recorder: openloop.Recorder
    claimed: int
    planned: int | None  # the share's slots; None: unbounded (until stopped)
    behind_s: float
    finished: bool
    cpu_s: float  # CPU seconds the generator process used since the run started
    wall_s: float

    @classmethod
    def of_plan(cls, source: str, plan: openloop.Plan, cpu_s: float, wall_s: float) -> Tally:
        return cls(
            source=source,
            share=plan.share,
            recorder=plan.recorder,
            claimed=plan.claimed,
            planned=plan.planned,
            behind_s=plan.behind_s(),
            finished=plan.finished.is_set(),
            cpu_s=cpu_s,
            wall_s=wall_s,
        )

    def wire(self, all_seconds: bool = False) -> dict[str, Any]:
        return {
            "source": self.source,
            "share": [self.share.index, self.share.count],
            "claimed": self.claimed,
            "planned": self.planned,
            "behind_s": self.behind_s,
            "finished": self.finished,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "recorder": self.recorder.wire(all_seconds),
        }


@dataclass
class Received:
    """What the master holds of one worker: its latest tally and every timeline second."""

    doc: dict[str, Any]
    seconds: dict[str, list[Any]] = field(default_factory=dict)

    def update(self, doc: dict[str, Any]) -> None:
        self.seconds.update(doc["recorder"]["seconds"])
        self.doc = doc

    def tally(self, timeline: bool = True) -> Tally:
        """timeline False: without the per-second rows (live figures do not need them)."""
        doc = self.doc
        return Tally(
            source=doc["source"],
            share=openloop.Share(*doc["share"]),
            recorder=openloop.Recorder.from_wire(doc["recorder"], self.seconds if timeline else {}),
            claimed=doc["claimed"],
            planned=doc["planned"],
            behind_s=doc["behind_s"],
            finished=doc["finished"],
            cpu_s=doc["cpu_s"],
            wall_s=doc["wall_s"],
        )


def due_slots(
    share: openloop.Share, rate: float | Arrivals, total: int | None, elapsed_s: float
) -> int:
    """The share's slots due within elapsed_s of the plan's start."""
    if elapsed_s < 0:
        return 0
    due = Arrivals.of(rate).due_by(elapsed_s)
    return share.slots(due if total is None else min(due, total))


@dataclass
class Totals:
    """A run's numbers across its generators, live (so far) or final.

    offered: the slots that count. Final: every planned slot (unbounded: every claimed one),
    and for a lost worker every slot of its share due before the end. Live: the completed
    requests plus a lost worker's slots due so far. Offered slots not completed are errors.
    """

    rate: float | Arrivals
    recorder: openloop.Recorder
    offered: int
    behind_s: float
    generators: list[dict[str, Any]]
    final: bool

    @property
    def unfinished(self) -> int:
        return max(0, self.offered - self.recorder.requests)

    @property
    def errors(self) -> int:
        return self.recorder.failures + self.unfinished

    @property
    def error_ratio(self) -> float:
        attempted = self.recorder.requests + self.unfinished
        return self.errors / attempted if attempted else (1.0 if self.final else 0.0)

    @property
    def throughput_rps(self) -> float:
        successes = self.recorder.requests - self.recorder.failures
        return openloop.achieved_rate(successes, self.offered, self.rate, self.behind_s)

    @property
    def lost(self) -> list[dict[str, Any]]:
        return [g for g in self.generators if g["lost"]]

    def latency(self) -> dict[str, float]:
        rec = self.recorder
        return openloop.summarize(rec.scheduled, rec.scheduled_sum_us, rec.requests)

    def service(self) -> dict[str, float]:
        rec = self.recorder
        return openloop.summarize(rec.service, rec.service_sum_us, rec.requests)

    def measured(self) -> slo.Measured:
        latency = self.latency()
        return slo.Measured(
            latency_avg_ms=latency["avg"],
            # A request that never completed has no bounded latency.
            latency_max_ms=latency["max"] if not self.unfinished else math.inf,
            latency_p99_ms=latency["p99"],
            throughput_rps=self.throughput_rps,
            error_ratio=self.error_ratio,
        )

    def checks(self, targets: slo.Targets) -> list[slo.Check]:
        return slo.evaluate(targets, self.measured())


def totals(
    tallies: list[Tally],
    *,
    rate: float | Arrivals,
    total: int | None,
    elapsed_s: float,
    final: bool,
    lost: set[str] = frozenset(),  # type: ignore[assignment]
) -> Totals:
    """Merge the generators' tallies; elapsed_s: seconds since the plan's start (now, or when
    the run ended), which bounds a lost worker's due slots."""
    merged = openloop.Recorder()
    offered, behind, rows = 0, 0.0, []
    for tally in tallies:
        merged.add(tally.recorder)
        is_lost = tally.source in lost
        done = tally.recorder.requests
        if final and tally.planned is not None:
            mine = tally.planned  # a lost worker's whole share too
        elif is_lost or final:
            # Unbounded: what it claimed, and at least its share of the slots due by the end
            # (a worker that left early); lost, live: its slots due so far, sent or not.
            due = due_slots(tally.share, rate, total, elapsed_s)
            mine = max(due, tally.claimed if tally.planned is None else done)
        else:
            mine = done
        offered += mine
        behind = max(behind, tally.behind_s)
        rows.append(
            {
                "source": tally.source,
                "index": tally.share.index,
                "of": tally.share.count,
                "completed": done,
                "failures": tally.recorder.failures,
                "unsent": max(0, mine - done),
                "lost": is_lost,
                "cpu_s": tally.cpu_s,
                "cpu_percent_of_one_core": 100 * tally.cpu_s / tally.wall_s if tally.wall_s else 0,
            }
        )
    return Totals(
        rate=rate,
        recorder=merged,
        offered=offered,
        behind_s=behind,
        generators=sorted(rows, key=lambda r: r["index"]),
        final=final,
    )
