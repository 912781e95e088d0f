"""Reliability scenarios on the real node: open-loop traffic (kserve_gitops.e2e.traffic) through
the revision's public Service, the path the ingress takes (Knative's activator in it whenever
Knative puts it there), while the service scales from zero or a fault hits the node. Each scenario
prints its requests over time and checks a budget derived from what the environment declares (the
revision's timeout, the autoscaler's windows, the pod's probes), never from a measured result.

What a client sees is counted without retries; the InferenceService's state at every event goes
into the report beside the requests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kserve_gitops.argocd import health
from kserve_gitops.base.tools import CommandError
from kserve_gitops.base.wait import wait_until
from kserve_gitops.controllers.canary import Split
from kserve_gitops.e2e import rollout_load, traffic
from kserve_gitops.e2e.paths import ClusterPaths, PathError, condition_true, pod_ready
from kserve_gitops.lifecycle.registry import Registry
from kserve_gitops.node.realnode import RealNode
from kserve_gitops.repo import Repo
from kserve_gitops.repo.slo import parse_duration
from kserve_gitops.serving import client

RATE = 20.0  # req/s: a quarter of the SLO's rate, so that a failure is the scenario's, not load's
BASELINE_S = 10.0  # traffic before the change, to show the steady state it disturbs
AFTER_S = 15.0  # traffic after recovery, to show it holds
CRASH_BACKOFF_S = 10.0  # the kubelet's initial crash-loop back-off before a restart (kubelet)
MODEL_CONTAINER = "kserve-container"


def seconds(text: str) -> float:
    """A Knative config map's duration ("60s", "2m"); "0s" is zero (a period switched off)."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


@dataclass(frozen=True)
class Declared:
    """What the environment declares that bounds the scenarios, read from the live objects."""

    timeout_s: float  # the revision's timeoutSeconds: how long the activator holds a request
    stable_window_s: float
    scale_to_zero_s: float  # the larger of the grace period and the pod retention period

    @classmethod
    def read(cls, paths: ClusterPaths, model: str, namespace: str) -> Declared:
        rev = paths.get("revision", paths.revision(model, namespace), "-n", namespace)
        autoscaler = paths.get("configmap", "config-autoscaler", "-n", "knative-serving")["data"]
        return cls(
            timeout_s=float(rev["spec"].get("timeoutSeconds") or 300),
            stable_window_s=seconds(autoscaler.get("stable-window", "60s")),
            scale_to_zero_s=max(
                seconds(autoscaler.get("scale-to-zero-grace-period", "30s")),
                seconds(autoscaler.get("scale-to-zero-pod-retention-period", "0s")),
            ),
        )

    @property
    def scale_down_s(self) -> float:
        """From the last request to no pod: the stable window with no traffic, the scale-to-zero
        period, then the pod's termination grace (Knative sets it to the revision's timeout:
        queue-proxy drains what is in flight)."""
        return self.stable_window_s + self.scale_to_zero_s + self.timeout_s


@dataclass(frozen=True)
class Budget:
    max_failed: int
    max_latency_s: float
    within_s: float | None  # the bound on the scenario's measured time, when it has one
    why: str
    measured: str = ""  # what that time is: "answers again", "no pod left"


@dataclass
class Result:
    scenario: str
    budget: Budget
    counts: traffic.Counts
    events: list[tuple[float, str]]
    table: str
    took_s: float | None = None  # the time the budget's `within_s` bounds
    states: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the scenario saw go wrong

    @property
    def breaches(self) -> list[str]:
        c, b, out = self.counts, self.budget, list(self.problems)
        if c.failed > b.max_failed:
            out.append(f"{c.failed} failed request(s), budget {b.max_failed}")
        if c.wrong:
            out.append(f"{c.wrong} answer(s) with other predictions than expected")
        if c.max_latency_s is not None and c.max_latency_s > b.max_latency_s:
            out.append(f"slowest answer {c.max_latency_s:.2f}s, budget {b.max_latency_s:g}s")
        if b.within_s is not None and (self.took_s is None or self.took_s > b.within_s):
            took = "never" if self.took_s is None else f"after {self.took_s:.1f}s"
            out.append(f"{b.measured} {took}, budget {b.within_s:g}s")
        if c.sent == 0:
            out.append("no request was sent")
        return out

    def text(self) -> str:
        c, b = self.counts, self.budget
        first = "-" if c.first_answer_s is None else f"{c.first_answer_s:.2f}s"
        slowest = "-" if c.max_latency_s is None else f"{c.max_latency_s:.2f}s"
        lines = [
            f"scenario {self.scenario}: {'HELD' if not self.breaches else 'BROKEN'}",
            f"  budget: at most {b.max_failed} failed, every answer within {b.max_latency_s:g}s"
            + ("" if b.within_s is None else f", {b.measured} within {b.within_s:g}s"),
            f"  why: {b.why}",
            f"  requests: {c.sent} sent at {RATE:g}/s, {c.answered} answered, {c.failed} failed, "
            f"{c.wrong} wrong; first answer at {first}, slowest {slowest}"
            + ("" if self.took_s is None else f"; {b.measured} after {self.took_s:.1f}s"),
            *(f"  breach: {b}" for b in self.breaches),
            "",
            self.table,
        ]
        if self.states:
            lines += ["", "InferenceService at each event:"]
            lines += [f"  {s['at']:.1f}s {s['event']}: {s['state']}" for s in self.states]
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "held": not self.breaches,
            "breaches": self.breaches,
            "budget": asdict(self.budget),
            "counts": asdict(self.counts),
            "took_s": self.took_s,
            "events": [{"at_s": round(t, 2), "event": e} for t, e in self.events],
            "states": self.states,
        }


@dataclass
class Scenarios:
    """The scenarios against `model` in `namespace` on the cluster `paths` reaches, whose real
    node is `node`; `state` describes the InferenceService for the report at each event."""

    paths: ClusterPaths
    node: RealNode
    model: str
    namespace: str
    rows: client.Rows
    expected: tuple[Any, ...]
    echo: Callable[[str], None]
    state: Callable[[], str]
    registry: Registry | None = None  # the model's versions, for the rollout
    # Runs the project's rollout (canary, rollback twice), calling back with each split seen.
    rollout: Callable[[Callable[[str, Split], None]], list[str]] | None = None

    def run(self, name: str) -> Result:
        declared = Declared.read(self.paths, self.model, self.namespace)
        scenario = {
            "scale-from-zero": self.scale_from_zero,
            "container-kill": self.container_kill,
            "kubelet-restart": lambda d: self.node_restart(d, "kubelet"),
            "containerd-restart": lambda d: self.node_restart(d, "containerd"),
            "rollout": self.rollout_under_load,
        }[name]
        return scenario(declared)

    # -- helpers -----------------------------------------------------------------------------

    def _revision(self) -> str:
        return self.paths.revision(self.model, self.namespace)

    def _load(self, declared: Declared) -> traffic.OpenLoop:
        url, headers = self.paths.public(self.model, self.namespace)
        load = traffic.OpenLoop(url, self.model, self.rows, RATE, headers, declared.timeout_s)
        load.start()
        return load

    def event(self, load: traffic.OpenLoop, events: list, states: list, what: str) -> None:
        at = load.now()
        events.append((at, what))
        states.append({"at": round(at, 2), "event": what, "state": self.state()})
        self.echo(f"    {at:6.1f}s {what}")

    def until(self, load: traffic.OpenLoop, at_s: float) -> None:
        time.sleep(max(0.0, at_s - load.now()))

    def _steady_pod(self, d: Declared) -> str:
        """The revision's Ready pod once its PodAutoscaler is Active (the load wakes it when
        there is none). A scenario started just as an idle revision scales to zero would
        otherwise act on a pod being deleted (CI saw it); and a pod killed while the
        PodAutoscaler is still activating gets only what is left of Knative's activation
        timeout (progress deadline + 30 s) to come back before the revision goes to zero."""
        rev = self._revision()

        wait_until(
            lambda: condition_true(
                self.paths.get("podautoscaler", rev, "-n", self.namespace), "Active"
            ),
            d.timeout_s,
            1,
            f"PodAutoscaler {self.namespace}/{rev} Active",
            PathError,
        )
        return self.paths.wait_for_ready(self.namespace, rev, d.timeout_s)[0]

    def _container(self, pod: str) -> tuple[int, str]:
        """(restart count, containerd id) of the pod's model container."""
        obj = self.paths.get("pod", pod, "-n", self.namespace)
        statuses = obj["status"].get("containerStatuses") or []
        status = next(s for s in statuses if s["name"] == MODEL_CONTAINER)
        return int(status["restartCount"]), str(status.get("containerID", ""))

    def _pod_ready(self, pod: str) -> bool:
        return pod_ready(self.paths.get("pod", pod, "-n", self.namespace))

    # -- the scenarios -----------------------------------------------------------------------

    def scale_from_zero(self, d: Declared) -> Result:
        """No pod, then load: the activator holds every request until the pod is up; then the
        load stops and the pod scales to zero with nothing in flight cut."""
        rev = self._revision()
        self.paths.close()  # no keep-alive: the revision must be free to scale to zero
        waited = self.paths.wait_for_zero(self.namespace, rev, d.scale_down_s + d.timeout_s)
        self.echo(f"    no pod of {rev} ({waited:.0f}s without traffic)")
        events: list[tuple[float, str]] = []
        states: list[dict[str, Any]] = []
        load = self._load(d)
        self.event(load, events, states, "load starts with no pod")
        self.paths.wait_for_ready(self.namespace, rev, d.timeout_s)
        self.event(load, events, states, "pod Ready")
        self.until(load, BASELINE_S + AFTER_S)
        budget = Budget(
            0,
            d.timeout_s,
            d.scale_down_s,
            f"the activator holds requests while no pod exists, up to the revision's timeout "
            f"({d.timeout_s:g}s); after the last request the pod goes within the stable window "
            f"({d.stable_window_s:g}s) + scale-to-zero period ({d.scale_to_zero_s:g}s) + the "
            f"pod's termination grace (the revision's timeout)",
            "no pod left",
        )
        outcomes = load.stop()  # every request in flight ends before the scale-down is timed
        stopped = load.now()
        events.append((stopped, "load stops; every request in flight ended"))
        gone = self.paths.wait_for_zero(self.namespace, rev, d.scale_down_s + d.timeout_s)
        self.event(load, events, states, f"scaled to zero {gone:.0f}s after the last request")
        return result("scale-from-zero", budget, outcomes, {self.expected}, events, states, gone)

    def container_kill(self, d: Declared) -> Result:
        """SIGKILL to the model server mid-load; the kubelet restarts it, and the activator holds
        what arrives until the server answers again."""
        events: list[tuple[float, str]] = []
        states: list[dict[str, Any]] = []
        load = self._load(d)
        self.until(load, BASELINE_S)
        pod = self._steady_pod(d)
        restarts, cid = self._container(pod)
        self.node.ctr("task", "kill", "--signal", "SIGKILL", cid.split("://")[-1])
        killed = load.now()
        self.event(load, events, states, f"{MODEL_CONTAINER} of {pod} killed (SIGKILL)")
        deadline = time.monotonic() + CRASH_BACKOFF_S + d.timeout_s
        while (now := self._container(pod)[0]) == restarts and time.monotonic() < deadline:
            time.sleep(0.5)
        if now > restarts:
            self.event(load, events, states, f"restarted by the kubelet (restartCount {now})")
        while not self._pod_ready(pod) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(AFTER_S)
        budget = Budget(
            math.ceil(RATE * CRASH_BACKOFF_S) + 1,
            d.timeout_s,
            CRASH_BACKOFF_S + d.timeout_s,
            f"requests may fail until the kubelet restarts the container (its first crash "
            f"back-off is at most {CRASH_BACKOFF_S:g}s: {RATE:g}/s x {CRASH_BACKOFF_S:g}s, +1 in "
            f"flight), after which queue-proxy holds them until the server answers; clients are "
            f"served again within that back-off + the revision's timeout ({d.timeout_s:g}s), so "
            f"that no request held meanwhile times out",
            "answers again",
        )
        outcomes = load.stop()
        recovered = traffic.recovery_s(outcomes, killed)
        if recovered is not None:
            events.append((killed + recovered, "answers again (every later request answered)"))
        if now == restarts:
            events.append((load.now(), f"{MODEL_CONTAINER} was not restarted"))
        answers = {self.expected}
        return result("container-kill", budget, outcomes, answers, events, states, recovered)

    def rollout_under_load(self, d: Declared) -> Result:
        """The project's canary and two-step rollback while load runs: no request fails, and
        each revision answers with its own version (a row the versions disagree on tells)."""
        if self.registry is None or self.rollout is None:
            raise PathError("the rollout scenario needs the model's registry and rollout")
        rows = rollout_load.version_rows(self.registry, tuple(self.rows[0]))
        versions = rollout_load.version_answers(self.registry, rows)
        router = rollout_load.Router(self.paths, self.namespace)
        events: list[tuple[float, str]] = []
        states: list[dict[str, Any]] = []
        stages: list[tuple[float, str, Split]] = []
        load = traffic.OpenLoop("", self.model, rows, RATE, timeout_s=d.timeout_s, route=router)

        def on_stage(stage: str, split: Split) -> None:
            router.follow(split)
            if not load.started:
                load.start()
            stages.append((load.now(), stage, split))
            self.event(load, events, states, f"{stage}: {split.describe()}")

        self.rollout(on_stage)  # each stage is echoed as an event
        time.sleep(AFTER_S)
        outcomes = load.stop()
        budget = Budget(
            0,
            d.timeout_s,
            None,
            "a rollout must not cost a request: the activator holds what reaches a revision "
            f"without a pod, up to the revision's timeout ({d.timeout_s:g}s); each revision "
            "answers with the version it was created with",
        )
        done = result("rollout", budget, outcomes, set(versions), events, states)
        done.table += "\n\n" + rollout_load.stage_table(outcomes, stages, versions)
        done.problems += rollout_load.mixed_revisions(outcomes, versions)
        return done

    def node_restart(self, d: Declared, process: str) -> Result:
        """The node's kubelet or containerd restarted mid-load: running pods keep answering."""
        events: list[tuple[float, str]] = []
        states: list[dict[str, Any]] = []
        load = self._load(d)
        self.until(load, BASELINE_S)
        pod = self._steady_pod(d)
        before = self._container(pod)
        self.event(load, events, states, f"{process} stopped (SIGTERM)")
        took = self.node.restart(process)
        self.event(load, events, states, f"{process} ready again after {took:.1f}s")
        time.sleep(AFTER_S)
        after = self._container(pod)
        budget = Budget(
            0,
            d.timeout_s,
            None,
            f"the containers run under their shims, not under {process}: no request fails and "
            f"the model container is not restarted",
        )
        done = result(f"{process}-restart", budget, load.stop(), {self.expected}, events, states)
        if after != before:
            done.problems.append(f"{MODEL_CONTAINER} restarted: {before} -> {after}")
        return done


def result(
    name: str,
    budget: Budget,
    outcomes: list[traffic.Outcome],
    answers: set[tuple[Any, ...]],
    events: list[tuple[float, str]],
    states: list[dict[str, Any]],
    took: float | None = None,
) -> Result:
    """A scenario's result from its outcomes: the totals (an answer outside `answers` is
    wrong) and the table over time with the events in time order."""
    counts = traffic.counts(outcomes, answers)
    table = traffic.over_time(outcomes, sorted(events))
    return Result(name, budget, counts, events, table, took, states)


def inference_service_state(paths: ClusterPaths, model: str, namespace: str, repo: Repo) -> str:
    """Ready and the model's transition status, and what Argo CD would show: its own Lua health
    check at the pinned version beside ours (argocd/base/argocd-cm.yaml), run on the live
    object (kserve_gitops.argocd)."""
    try:
        obj = paths.get("inferenceservice", model, "-n", namespace)
    except CommandError as exc:  # a failed read is reported beside the requests, not fatal
        return f"unreadable ({exc})"
    status = obj.get("status") or {}
    ready = next(
        (c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"),
        "?",
    )
    transition = (status.get("modelStatus") or {}).get("transitionStatus", "?")
    try:
        upstream = health.evaluate(obj, repo=repo)
        ours = health.evaluate(obj, customized=True, repo=repo)
    except health.HealthCheckError as exc:
        return f"Ready={ready} transitionStatus={transition}; Argo CD health: {exc}"
    version = repo.version_of("argocd")
    return (
        f"Ready={ready} transitionStatus={transition}; Argo CD {version}: {upstream.status}"
        f" ({upstream.message}), ours: {ours.status} ({ours.message})"
    )
