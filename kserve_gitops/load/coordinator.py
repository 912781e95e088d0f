"""One open-loop run over Locust's runners: in this process, or a master and its workers.

Local: one plan for the whole rate. Distributed: at test start the master gives each connected
worker its share of the plan (generator i of n sends global slots i, i+n, ...) and a common
wall-clock start, so the offered rate stays exact in total. Workers add their tally to every
stats report and send a final one when their share is done or the test stops; the master merges
the latest of each. A worker that goes missing or quits before its final tally is reported as
lost, and its slots due by the end count as errors (Totals.offered), never silently dropped.
"""

from __future__ import annotations

import gevent
from gevent.event import Event
from kserve_gitops.load import openloop, tally
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, LocalRunner, MasterRunner, WorkerRunner

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from kserve_gitops.base.arrivals import Arrivals

log = logging.getLogger("kserve_gitops.load")

PLAN_MSG = "kgops_plan"  # master -> worker: the run and the worker's share
DRAIN_MSG = "kgops_drain"  # master -> worker: claim no more, finish in flight, send the final
FINAL_MSG = "kgops_final"  # worker -> master: the tally when the share is done or stopped
REPORT_KEY = "kgops_tally"  # in every worker stats report: the tally so far
DRAIN_S = 10.0  # at a stop of an unbounded run, how long requests in flight may complete


@dataclass(frozen=True)
class RunSpec:
    """What every generator of a run needs: the plan, and what to send where."""

    rate: float | Arrivals  # req/s, fixed or ramped
    total: int | None  # planned requests; None: until the test is stopped
    lead_s: float  # from test start to slot 0, for the users to spawn
    model: str
    host_header: str | None
    headers: tuple[tuple[str, str], ...] = ()  # more request headers (name, value)


@dataclass(frozen=True)
class RequestTarget:
    """Read by the locustfile's users: which model, which Host header and which other headers
    (Knative's activator routes by Knative-Serving-Revision and -Namespace)."""

    model: str
    host_header: str | None
    headers: tuple[tuple[str, str], ...] = ()


def cpu_s() -> float:
    """CPU seconds this process has used."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


class Coordinator:
    """The run as the process driving it sees it: live and final totals, done when every
    generator has finished its share (or was lost)."""

    def __init__(self, environment: Environment, spec_for_run: Callable[[], RunSpec]) -> None:
        self.environment = environment
        self.spec_for_run = spec_for_run
        self.spec: RunSpec | None = None
        self.done = Event()
        self.ended_s: float | None = None  # plan time when the test stopped
        self.wall_t0 = 0.0
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stopping.add_listener(self._on_test_stopping)

    def elapsed_s(self) -> float:
        """Seconds since slot 0 (negative before it), frozen when the test stopped."""
        if self.ended_s is not None:
            return self.ended_s
        return time.time() - self.wall_t0

    def totals(self, final: bool) -> tally.Totals:
        raise NotImplementedError

    def _on_test_start(self, **_kwargs) -> None:
        self.spec = self.spec_for_run()
        self.done.clear()
        self.ended_s = None
        self.wall_t0 = time.time() + self.spec.lead_s
        self.environment.kgops_target = RequestTarget(
            self.spec.model, self.spec.host_header, self.spec.headers
        )
        self._start(self.spec)

    def _start(self, spec: RunSpec) -> None:
        raise NotImplementedError

    def _on_test_stopping(self, **_kwargs) -> None:
        # The end is when the stop was asked for: slots due while requests drain do not count.
        if self.spec is not None and self.ended_s is None:
            self.ended_s = time.time() - self.wall_t0


class LocalCoordinator(Coordinator):
    """The whole plan in this process (Locust's LocalRunner)."""

    plan: openloop.Plan | None = None

    def _start(self, spec: RunSpec) -> None:
        self.plan = openloop.Plan(spec.rate, spec.total, wall_t0=self.wall_t0)
        self.environment.kgops_plan = self.plan
        self.cpu0, self.started = cpu_s(), time.monotonic()
        gevent.spawn(self._watch, self.plan)

    def _watch(self, plan: openloop.Plan) -> None:
        plan.finished.wait()
        if plan is self.plan:
            self.done.set()

    def _on_test_stopping(self, **kwargs) -> None:
        super()._on_test_stopping(**kwargs)
        if self.plan is not None:
            self.plan.stop()
            self.plan.finished.wait(timeout=_drain_s(self.plan.total))

    def totals(self, final: bool) -> tally.Totals:
        assert self.plan is not None and self.spec is not None
        tallies = [
            tally.Tally.of_plan(
                "local", self.plan, cpu_s() - self.cpu0, time.monotonic() - self.started
            )
        ]
        return tally.totals(
            tallies,
            rate=self.spec.rate,
            total=self.spec.total,
            elapsed_s=self.elapsed_s(),
            final=final,
        )


@dataclass
class Member:
    """A worker of the current run."""

    share: openloop.Share
    received: tally.Received | None = None
    final: bool = False
    lost_at_s: float | None = None


class MasterCoordinator(Coordinator):
    """Shares the plan among the connected workers and merges what they report."""

    def __init__(self, environment: Environment, spec_for_run: Callable[[], RunSpec]) -> None:
        super().__init__(environment, spec_for_run)
        self.runner: MasterRunner = environment.runner  # type: ignore[assignment]
        self.members: dict[str, Member] = {}
        self.run_id = ""
        self.lost_log: list[str] = []
        self._watcher: gevent.Greenlet | None = None
        self.runner.register_message(FINAL_MSG, self._on_final)
        environment.events.worker_report.add_listener(self._on_report)

    def _start(self, spec: RunSpec) -> None:
        runner = self.runner
        active = runner.clients.ready + runner.clients.running + runner.clients.spawning
        ids = sorted((c.id for c in active), key=runner.get_worker_index)
        self.run_id = f"{self.wall_t0:.6f}"
        self.members = {cid: Member(openloop.Share(i, len(ids))) for i, cid in enumerate(ids)}
        self.lost_log = []
        for cid, member in self.members.items():
            runner.send_message(
                PLAN_MSG,
                {
                    "run": self.run_id,
                    "arrivals": Arrivals.of(spec.rate).wire(),
                    "total": spec.total,
                    "wall_t0": self.wall_t0,
                    "share": [member.share.index, member.share.count],
                    "model": spec.model,
                    "host_header": spec.host_header,
                    "headers": [list(h) for h in spec.headers],
                },
                client_id=cid,
            )
        shares = ", ".join(f"{cid} #{m.share.index}" for cid, m in self.members.items())
        plan = Arrivals.of(spec.rate).describe()
        log.info("open-loop plan: %s shared by %d workers (%s)", plan, len(ids), shares)
        if self._watcher is not None:
            self._watcher.kill()
        self._watcher = gevent.spawn(self._watch)

    def _on_test_stopping(self, **kwargs) -> None:
        """Before Locust stops the workers (which kills requests in flight): every worker still
        running stops claiming, lets its requests complete and sends its final tally."""
        super()._on_test_stopping(**kwargs)
        if self.spec is None or self.done.is_set():
            return
        timeout = _drain_s(self.spec.total)
        for cid, member in self.members.items():
            if not member.final and member.lost_at_s is None:
                self.runner.send_message(DRAIN_MSG, {"timeout": timeout}, client_id=cid)
        self.done.wait(timeout=timeout + 5)

    def _accept(self, client_id: str, doc: dict) -> Member | None:
        member = self.members.get(client_id)
        if member is None or doc.get("run") != self.run_id or member.lost_at_s is not None:
            return None
        if member.received is None:
            member.received = tally.Received(doc)
        member.received.update(doc)
        return member

    def _on_report(self, client_id: str, data: dict, **_kwargs) -> None:
        if REPORT_KEY in data:
            self._accept(client_id, data[REPORT_KEY])

    def _on_final(self, environment: Environment, msg: Message, **_kwargs) -> None:
        member = self._accept(msg.node_id, msg.data)
        if member is not None:
            member.final = True
            self._check_done()

    def _watch(self) -> None:
        """Once a second: a member whose client is gone or missing before its final tally is
        lost (Locust marks a worker missing after ~3 s without a heartbeat)."""
        while not self.done.is_set():
            for cid, member in self.members.items():
                if member.final or member.lost_at_s is not None:
                    continue
                client = self.runner.clients.get(cid)
                if client is None or client.state == STATE_MISSING:
                    member.lost_at_s = max(0.0, self.elapsed_s())
                    reported = member.received.doc["recorder"]["requests"] if member.received else 0
                    note = (
                        f"worker {cid} (share {member.share.index + 1} of {member.share.count})"
                        f" lost (no heartbeat, or gone) at {member.lost_at_s:.1f}s after"
                        f" {reported} reported requests: its unsent slots count as errors"
                    )
                    self.lost_log.append(note)
                    log.warning(note)
            self._check_done()
            gevent.sleep(1)

    def _check_done(self) -> None:
        if self.members and all(m.final or m.lost_at_s is not None for m in self.members.values()):
            self.done.set()

    def totals(self, final: bool) -> tally.Totals:
        assert self.spec is not None
        tallies, lost = [], set()
        for cid, member in self.members.items():
            if member.received is not None:
                tallies.append(member.received.tally(timeline=final))
            else:  # nothing reported yet: an empty tally that still owns its share
                tallies.append(
                    tally.Tally(
                        cid,
                        member.share,
                        openloop.Recorder(),
                        0,
                        None if self.spec.total is None else member.share.slots(self.spec.total),
                        0.0,
                        False,
                        0.0,
                        0.0,
                    )
                )
            if member.lost_at_s is not None:
                lost.add(cid)
        return tally.totals(
            tallies,
            rate=self.spec.rate,
            total=self.spec.total,
            elapsed_s=self.elapsed_s(),
            final=final,
            lost=lost,
        )


class WorkerAgent:
    """A worker's side: runs the share the master sends, reports its tally."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.runner: WorkerRunner = environment.runner  # type: ignore[assignment]
        self.plan: openloop.Plan | None = None
        self.run_id = ""
        self.cpu0 = self.started = 0.0
        self.runner.register_message(PLAN_MSG, self._on_plan)
        self.runner.register_message(DRAIN_MSG, self._on_drain)
        events = environment.events
        events.report_to_master.add_listener(self._on_report)
        events.test_stop.add_listener(self._on_test_stop)

    def _on_plan(self, environment: Environment, msg: Message, **_kwargs) -> None:
        doc = msg.data
        self.run_id = doc["run"]
        self.plan = openloop.Plan(
            Arrivals.from_wire(doc["arrivals"]),
            doc["total"],
            share=openloop.Share(*doc["share"]),
            wall_t0=doc["wall_t0"],
        )
        environment.kgops_plan = self.plan
        environment.kgops_target = RequestTarget(
            doc["model"], doc["host_header"], tuple((k, v) for k, v in doc.get("headers", ()))
        )
        self.cpu0, self.started = cpu_s(), time.monotonic()
        gevent.spawn(self._final_when_done, self.plan)

    def _tally(self, all_seconds: bool = False) -> dict:
        assert self.plan is not None
        doc = tally.Tally.of_plan(
            self.runner.client_id, self.plan, cpu_s() - self.cpu0, time.monotonic() - self.started
        ).wire(all_seconds)
        return {"run": self.run_id, **doc}

    def _on_report(self, data: dict, **_kwargs) -> None:
        if self.plan is not None:
            data[REPORT_KEY] = self._tally()

    def _final_when_done(self, plan: openloop.Plan) -> None:
        plan.finished.wait()
        if plan is self.plan:
            self.runner.send_message(FINAL_MSG, self._tally(all_seconds=True))

    def _on_drain(self, environment: Environment, msg: Message, **_kwargs) -> None:
        plan = self.plan
        if plan is not None:
            plan.stop()
            plan.finished.wait(timeout=msg.data["timeout"])
            self.runner.send_message(FINAL_MSG, self._tally(all_seconds=True))

    def _on_test_stop(self, **_kwargs) -> None:
        plan = self.plan
        if plan is not None and not plan.finished.is_set():
            plan.stop()  # requests killed in flight stay outstanding: the master counts them
            self.runner.send_message(FINAL_MSG, self._tally(all_seconds=True))


def _drain_s(total: int | None) -> float:
    # A bounded run's caller already gave requests their grace time before stopping.
    return DRAIN_S if total is None else 1.0


def install(environment: Environment, spec_for_run: Callable[[], RunSpec]) -> Coordinator | None:
    """Hook the open-loop run into the environment's runner; the worker side returns None."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        environment.kgops_worker = WorkerAgent(environment)
        return None
    if isinstance(runner, MasterRunner):
        coordinator: Coordinator = MasterCoordinator(environment, spec_for_run)
    elif isinstance(runner, LocalRunner):
        coordinator = LocalCoordinator(environment, spec_for_run)
    else:
        raise TypeError(f"no open-loop coordination for {type(runner).__name__}")
    environment.kgops = coordinator
    return coordinator
