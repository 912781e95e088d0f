"""Open-loop traffic that records every request, for the reliability scenarios: request i is due
at t0 + i/rate whatever the server does, each sent on its own task, and each outcome (status,
answer, latency from its due time) is kept, so that a failure or a stall shows in time.

The Locust load test (kserve_gitops.load) reports aggregates for the SLO; a scenario needs each
request, and no retry: what a client without retries would have seen is what gets counted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy
from tabulate import tabulate

from kserve_gitops.serving import client


@dataclass(frozen=True)
class Outcome:
    due_s: float  # seconds after the run's start that the request was due (and sent)
    latency_s: float | None  # from due time to the answer; None when there was no answer
    status: int | None  # HTTP status; None for a transport error or a timeout
    answer: tuple[Any, ...] | None  # the predictions of a 200
    error: str = ""
    target: str = ""  # where the route sent it (a revision), when the traffic is routed

    @property
    def ok(self) -> bool:
        return self.status == 200


# Where request i goes: (base URL, headers, a label for the report).
Route = Callable[[int], tuple[str, Mapping[str, str], str]]


@dataclass
class OpenLoop:
    """`rate` requests a second of one V1 prediction of `rows` to `url` (with `headers`), or
    where `route` sends each, in a thread of its own until stop(); each request may take up to
    `timeout_s`."""

    url: str
    model: str
    rows: client.Rows
    rate: float
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0
    route: Route | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() of request 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._run(),), daemon=True, name="kgops-open-loop"
        )
        self._thread.start()

    def now(self) -> float:
        """Seconds since request 0 was due: the time axis of the outcomes and the events."""
        return time.monotonic() - self.started

    def stop(self) -> list[Outcome]:
        """Send no more; wait for every request in flight (each ends by its timeout) and return
        all outcomes in due order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 30)
        return sorted(self.outcomes, key=lambda o: o.due_s)

    async def _run(self) -> None:
        path = client.predict_path("v1", self.model)
        body = client.request_body("v1", self.rows)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as http:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while not self._stop.is_set():
                due = i / self.rate
                await asyncio.sleep(max(0.0, due - self.now()))
                url, headers, target = self.route(i) if self.route else (self.url, self.headers, "")
                task = asyncio.create_task(self._one(http, url + path, headers, body, due, target))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks)

    async def _one(
        self,
        http: httpx.AsyncClient,
        url: str,
        headers: Mapping[str, str],
        body: Any,
        due: float,
        target: str,
    ) -> None:
        try:
            resp = await http.post(url, json=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.outcomes.append(Outcome(due, None, None, None, error, target))
            return
        took = self.now() - due
        if resp.status_code != 200:
            self.outcomes.append(
                Outcome(due, took, resp.status_code, None, resp.text[:200], target)
            )
            return
        answer = tuple(resp.json().get("predictions") or ())
        self.outcomes.append(Outcome(due, took, 200, answer, "", target))


@dataclass(frozen=True)
class Counts:
    sent: int
    answered: int
    failed: int
    wrong: int  # answered 200 with other predictions than expected
    first_answer_s: float | None
    max_latency_s: float | None


def counts(outcomes: list[Outcome], expected: Collection[tuple[Any, ...]]) -> Counts:
    """The totals; an answer other than every one of `expected` is wrong."""
    ok = [o for o in outcomes if o.ok]
    latencies = [o.latency_s for o in ok if o.latency_s is not None]
    return Counts(
        sent=len(outcomes),
        answered=len(ok),
        failed=len(outcomes) - len(ok),
        wrong=sum(1 for o in ok if o.answer not in expected),
        first_answer_s=min((o.due_s + (o.latency_s or 0) for o in ok), default=None),
        max_latency_s=max(latencies, default=None),
    )


def recovery_s(outcomes: list[Outcome], since: float) -> float | None:
    """Seconds from `since` until clients are served again: the answer to the first request due
    after the last one that failed (after `since` when none did), however long it was held."""
    last_failed = max((o.due_s for o in outcomes if not o.ok and o.due_s >= since), default=None)
    after = [
        o
        for o in outcomes
        if o.ok
        and o.latency_s is not None
        and (o.due_s > last_failed if last_failed is not None else o.due_s >= since)
    ]
    if not after:
        return None
    return after[0].due_s + (after[0].latency_s or 0.0) - since


def over_time(
    outcomes: list[Outcome], events: list[tuple[float, str]], bucket_s: float = 5.0
) -> str:
    """Requests by the second they were due, in buckets: sent, answered, failed, latency p50,
    p99 and max (ms) of the answered, the failures' kinds, and the scenario's events."""
    end = max([0.0, *(o.due_s for o in outcomes), *(t for t, _ in events)])
    rows = []
    for n in range(int(end // bucket_s) + 1):
        start, stop = n * bucket_s, (n + 1) * bucket_s
        inside = [o for o in outcomes if start <= o.due_s < stop]
        lat = numpy.array([1000 * o.latency_s for o in inside if o.ok and o.latency_s is not None])
        failures = sorted({o.error.split(":")[0] or str(o.status) for o in inside if not o.ok})
        figures = (
            [f"{numpy.percentile(lat, q):.1f}" for q in (50, 99)] + [f"{lat.max():.1f}"]
            if lat.size
            else ["-"] * 3
        )
        notes = [f"{t:.1f}s {e}" for t, e in events if start <= t < stop]
        notes += [f"failed: {', '.join(failures)}"] if failures else []
        if not inside and not notes and rows and rows[-1][1] == 0 and not rows[-1][-1]:
            rows[-1][0] = f"{rows[-1][0].split('-')[0]}-{stop:g}s"  # one row for a quiet stretch
            continue
        rows.append(
            [
                f"{start:g}-{stop:g}s",
                len(inside),
                lat.size,
                len(inside) - lat.size,
                *figures,
                "; ".join(notes),
            ]
        )
    head = ["due", "sent", "answered", "failed", "p50 ms", "p99 ms", "max ms", "events"]
    return tabulate(rows, head, tablefmt="github")
