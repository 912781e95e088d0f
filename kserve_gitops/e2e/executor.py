"""The executor: runs a plan's steps in order, each with the commands it names. What a step
cannot show by its exit code (a Poll's output, a prediction, the steady state of a second apply)
is checked here; the only state carried between steps is the Host of the InferenceService."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kserve_gitops.base import redact
from kserve_gitops.base.process import ProcessError
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.controllers import canary, chain
from kserve_gitops.delivery.flux import FluxError
from kserve_gitops.e2e import broken_release, ingress, reliability, slo_table
from kserve_gitops.e2e.model_steps import (
    ClusterCanary,
    ClusterPath,
    ColdStart,
    LoadTest,
    Predict,
    Reliability,
    ResolveHost,
    SloComparison,
)
from kserve_gitops.e2e.paths import ClusterPaths, PathError
from kserve_gitops.e2e.provider import KwokCluster, changed_fields
from kserve_gitops.e2e.steps import (
    Apply,
    CheckCluster,
    CreateCluster,
    HelmInstall,
    NotRun,
    ObserveChain,
    Plan,
    Poll,
    Reapply,
    Run,
    StartControllers,
    StartLocalCluster,
    Step,
)
from kserve_gitops.lifecycle import registry
from kserve_gitops.localcluster.checks import Finding
from kserve_gitops.node.realnode import NodeError
from kserve_gitops.repo.slo import parse_duration
from kserve_gitops.serving import client


class StepFailed(Exception):
    """A step whose command succeeded but whose outcome is wrong (or never became right)."""


class StepNotRun(Exception):
    """A step this provider cannot perform: reported as not run, never as passed."""


def _yaml_docs(objects: Any) -> str:
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False)


def _declared(manifest: Path) -> dict[tuple[str, str], Any]:
    """(kind, name) -> the object a manifest declares (helm's manifests omit namespaces)."""
    found: dict[tuple[str, str], list[Any]] = {}
    for doc in yaml.safe_load_all(manifest.read_text()):
        if isinstance(doc, dict) and doc.get("kind"):
            key = (str(doc["kind"]), str((doc.get("metadata") or {}).get("name")))
            found.setdefault(key, []).append(doc)
    return {key: docs[0] for key, docs in found.items() if len(docs) == 1}


def _project(live: Any, declared: Any) -> Any:
    """The part of a live object a manifest declares: with the controllers running, fields
    they own (the Knative operator's labels on a namespace we declare) are theirs to change;
    the steady state is about ours. Without a declared object, the whole object."""
    if declared is None or not isinstance(live, dict) or not isinstance(declared, dict):
        return live
    return {k: _project(live.get(k), v) for k, v in declared.items() if k != "status"}


@dataclass
class Outcome:
    title: str
    layer: str
    seconds: float
    status: str  # passed | failed | not run
    reason: str = ""


@dataclass
class Executor:
    """Runs a plan's steps in order; the only state carried between steps is the Host."""

    plan: Plan
    runner: Runner
    report_dir: Path
    echo: Any = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    host: str | None = None
    kwok: KwokCluster | None = None
    unchecked: list[Finding] = field(default_factory=list)  # what kwok could not check
    chain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kgops-e2e-"))
        self.paths = ClusterPaths(self.runner, self.report_dir, self.echo)

    def _file(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def execute(self, step: Step) -> None:
        match step:
            case CreateCluster():
                self._create_cluster(step)
            case StartLocalCluster():
                self._kwok().start(self.runner)
            case StartControllers():
                for line in self._kwok().start_controllers(step.group):
                    self.echo(f"    {line}")
            case ObserveChain():
                self._observe(step)
            case ClusterCanary():
                self._canary(step)
            case NotRun():
                raise StepNotRun(step.reason)
            case CheckCluster():
                unchecked = self.unchecked
                findings = self._kwok().check(self.runner, unchecked)
                for note in unchecked:
                    self.echo(f"    not checked on kwok: {note}")
                if findings:
                    raise StepFailed(
                        f"{len(findings)} finding(s):\n" + "\n".join(f"  {f}" for f in findings)
                    )
            case Reapply():
                self._reapply(step)
            case HelmInstall():
                self._helm(step)
                self._settle()
            case Apply():
                manifest = self._file(f"{step.layer}.yaml", _yaml_docs(step.objects))
                self.runner.run(step.argv(manifest), timeout=120)
                self._settle()
            case Run():
                self.runner.run(step.argv(), timeout=step.timeout_s)
            case Poll():
                self._poll(step)
            case ResolveHost():
                url = self.runner.run(step.argv(), timeout=60).strip()
                self.host = urlparse(url).netloc
                if not self.host:
                    raise StepFailed(f"InferenceService {step.name} has no status.url ({url!r})")
                self.echo(f"    Host: {self.host}")
            case ClusterPath():
                self._path(lambda: self.paths.open(step.model, step.namespace, step.path))
            case ColdStart():
                self._cold_start(step)
            case SloComparison():
                self._slo_table(step)
            case Reliability():
                self._reliability(step)
            case Predict():
                self._predict(step)
            case LoadTest() if step.path:
                reports = self.report_dir / f"loadtest-{step.path}"
                target = self._path(lambda: self.paths.target(str(step.path)))
                argv = step.argv(target, None, str(reports))
                self.runner.run([sys.executable, *argv[1:]], timeout=900, stream=True)
            case LoadTest():
                reports = self.report_dir / "loadtest"
                argv = step.argv(self.plan.ingress, self._host(), str(reports))
                self.runner.run([sys.executable, *argv[1:]], timeout=900, stream=True)

    def _path(self, open_it: Any) -> str:
        try:
            return str(open_it())
        except (PathError, ProcessError) as exc:
            raise StepFailed(str(exc)) from exc

    def _slo_table(self, step: SloComparison) -> None:
        local = self.report_dir / "loadtest-local"
        slo_table.run_local(self.plan.repo, self.runner, step.env, step.model, local)
        runs = {"local": slo_table.summary(local)}
        runs |= {p: slo_table.summary(self.report_dir / f"loadtest-{p}") for p in step.paths}
        text = slo_table.table(runs)
        (self.report_dir / "slo-table.txt").write_text(text + "\n")
        self.paths.measures["slo"] = {name: run["checks"] for name, run in runs.items()}
        for line in text.splitlines():
            self.echo(f"    {line}")
        # The cluster paths are the e2e's verdict; the local run is the reference beside them.
        failed = [
            n
            for n, run in runs.items()
            if n != "local" and any(not c["passed"] for c in run["checks"])
        ]
        if failed:
            raise StepFailed(f"SLO missed on {', '.join(failed)} (slo-table.txt)")

    def _cold_start(self, step: ColdStart) -> None:
        try:
            got, _ = self.paths.cold_start(
                step.model, step.namespace, step.instances, step.timeout_s
            )
        except (PathError, client.PredictionError) as exc:
            raise StepFailed(f"cold start: {exc}") from exc
        if got != list(step.expected):
            raise StepFailed(f"cold start: predicted {got}, expected {list(step.expected)}")

    def _reliability(self, step: Reliability) -> None:
        node = self._kwok().node
        if node is None:
            raise StepFailed("the reliability scenarios need the real node (CLUSTER=node)")
        scenarios = reliability.Scenarios(
            self.paths,
            node,
            step.model,
            step.namespace,
            step.instances,
            step.expected,
            self.echo,
            lambda: reliability.inference_service_state(
                self.paths, step.model, step.namespace, self.plan.repo
            ),
            registry.load(self.plan.repo, step.model),
            lambda on_stage: self._rollout(
                step.model, step.namespace, step.percent, "rollout", on_stage
            ),
        )
        try:
            if step.scenario == broken_release.SCENARIO:
                flux_on_node = broken_release.FluxOnNode(
                    self.plan.repo,
                    self.plan.env,
                    step.model,
                    self.runner,
                    self.plan.kubeconfig,
                    self.workdir / "flux",
                    self.echo,
                )
                result = broken_release.run(scenarios, flux_on_node)
            else:
                result = scenarios.run(step.scenario)
        except (PathError, NodeError, broken_release.BrokenReleaseError, FluxError) as exc:
            raise StepFailed(f"{step.scenario}: {exc}") from exc
        text = result.text()
        redact.write_text(self.report_dir / f"reliability-{step.scenario}.txt", text + "\n")
        self.paths.measures.setdefault("reliability", {})[step.scenario] = result.summary()
        for line in text.splitlines():
            self.echo(f"    {line}")
        if result.breaches:
            raise StepFailed(f"{step.scenario}: budget broken: {'; '.join(result.breaches)}")

    def _observe(self, step: ObserveChain) -> None:
        """The chain's conditions into the report (chain.txt, summary.json) and the terminal;
        the step's outcome is the verdict."""
        verdict, links = chain.wait(
            str(self.plan.kubeconfig), step.namespace, step.name, step.timeout_s, self.echo
        )
        text = chain.render(links)
        redact.write_text(
            self.report_dir / "chain.txt", f"{verdict.status}: {verdict.reason}\n\n{text}"
        )
        self.chain = {
            "verdict": verdict.status,
            "reason": verdict.reason,
            "links": [link.__dict__ for link in links],
        }
        for line in text.splitlines():
            self.echo(f"    {line}")
        if verdict.status == "held":
            raise StepNotRun(verdict.reason)
        if verdict.status != "ready":
            raise StepFailed(f"{verdict.status}: {verdict.reason}")

    def _rollout(
        self,
        model: str,
        namespace: str,
        percent: int,
        folder: str,
        on_stage: Callable[[str, canary.Split], None] = lambda _stage, _split: None,
    ) -> list[str]:
        """The project's canary of the next registered version, then its two-step rollback
        (kserve_gitops.controllers.canary), in a copy of the checkout under `folder`."""
        reg = registry.load(self.plan.repo, model)
        version = canary.expected_version(
            self.plan.repo, reg, registry.state(reg, self.plan.env).stable
        )
        workdir = self.workdir / folder
        workdir.mkdir(exist_ok=True)
        return canary.run(
            self.plan.repo,
            self.plan.env,
            model,
            namespace,
            version,
            percent,
            self.plan.kubeconfig,
            self.runner.env or dict(os.environ),
            workdir,
            self.echo,
            on_stage,
        )

    def _canary(self, step: ClusterCanary) -> None:
        lines = self._rollout(step.model, step.namespace, step.percent, "canary")
        redact.write_text(self.report_dir / "canary.txt", "\n".join(lines) + "\n")
        self.chain["canary"] = lines
        for line in lines:
            self.echo(f"    {line}")

    def _settle(self) -> None:
        if self.kwok is not None:
            self.kwok.settle()

    def _kwok(self) -> KwokCluster:
        if self.kwok is None:
            raise StepFailed("this step needs the kwok provider (CLUSTER=kwok)")
        return self.kwok

    def _apply_argv(self, step: HelmInstall | Apply) -> tuple[list[str], str]:
        """(the command that applies it, a manifest naming the objects it owns)."""
        if isinstance(step, Apply):
            manifest = self._file(f"{step.layer}.yaml", _yaml_docs(step.objects))
            return step.argv(manifest), manifest
        values = self._file(f"values-{step.release}.yaml", yaml.safe_dump(dict(step.values)))
        owned = self.runner.run(
            ["helm", "get", "manifest", step.release, "-n", step.namespace], timeout=60, quiet=True
        )
        return step.argv(values if step.values else None), self._file(
            f"owned-{step.release}.yaml", owned
        )

    def _reapply(self, step: Reapply) -> None:
        """Apply every release and layer again; any object that changes is a finding (what
        Flux or Argo CD would then report as drift on every sync)."""
        drift: list[str] = []
        for again in step.steps:
            argv, owned = self._apply_argv(again)
            declared = _declared(Path(owned))
            before = self._kwok().live(self.runner, owned)
            self.runner.run(argv, timeout=900, quiet=True)
            self._settle()
            after = self._kwok().live(self.runner, owned)
            for ref, obj in after.items():
                mine = declared.get((ref.split("/")[0], ref.split("/")[-1]))
                fields = changed_fields(_project(before.get(ref), mine), _project(obj, mine))
                if fields:
                    drift.append(f"  {ref}: {', '.join(fields[:5])} (after {again.title})")
        if drift:
            raise StepFailed(
                f"{len(drift)} object(s) changed on a second apply:\n" + "\n".join(drift)
            )

    def _create_cluster(self, step: CreateCluster) -> None:
        (self.plan.repo.root / step.kubeconfig).parent.mkdir(parents=True, exist_ok=True)
        existing = self.runner.run(["kind", "get", "clusters"], timeout=60).split()
        if step.name in existing:
            self.echo(f"    cluster {step.name} exists (a KEEP=1 run): reusing it")
            self.runner.run(
                [
                    "kind",
                    "export",
                    "kubeconfig",
                    "--name",
                    step.name,
                    "--kubeconfig",
                    str(step.kubeconfig),
                ],
                timeout=60,
            )
            return
        self.runner.run(step.argv(), timeout=parse_duration(step.wait) + 600, stream=True)

    def _helm(self, step: HelmInstall) -> None:
        values = self._file(f"values-{step.release}.yaml", yaml.safe_dump(dict(step.values)))
        argv = step.argv(values if step.values else None)
        for attempt in range(1, step.attempts + 1):
            try:
                self.runner.run(argv, timeout=parse_duration(step.timeout) + 60)
                return
            except CommandError:
                if attempt == step.attempts:
                    raise
                self.echo(f"    attempt {attempt} failed; retrying in 5s")
                time.sleep(5)

    def _poll(self, step: Poll) -> None:
        deadline = time.monotonic() + step.timeout_s
        stdin = _yaml_docs(step.stdin_objects) if step.stdin_objects else None
        last = "no attempt"
        first = True
        while True:
            try:
                out = self.runner.run(step.argv(), stdin=stdin, timeout=60, quiet=not first)
                if step.satisfied(out):
                    return
                last = f"output did not satisfy the check: {out.strip()[:300]!r}"
            except CommandError as exc:
                last = str(exc)
            first = False
            if time.monotonic() + step.interval_s > deadline:
                raise StepFailed(f"not true after {step.timeout_s:g}s; last attempt: {last}")
            time.sleep(step.interval_s)

    def _host(self) -> str:
        if not self.host:
            raise StepFailed("no Host header: the InferenceService URL was not read")
        return self.host

    def _predict(self, step: Predict) -> None:
        policy = client.RetryPolicy(retries=3, backoff=0.5)
        try:
            if step.path:
                target = self._path(lambda: self.paths.target(str(step.path)))
                started = time.monotonic()
                got = client.predict(
                    target, step.model, step.instances, step.protocol, policy=policy
                )
                self.echo(f"    {step.path}: {1000 * (time.monotonic() - started):.1f} ms")
            else:
                got = ingress.predict(
                    self.plan.ingress,
                    step.model,
                    step.instances,
                    step.protocol,
                    self._host(),
                    step.timeout_s,
                    policy,
                    self.echo,
                )
        except client.PredictionError as exc:
            raise StepFailed(f"{step.protocol} prediction failed: {exc}") from exc
        self.echo(f"    predictions {got}")
        if got != list(step.expected):
            raise StepFailed(f"{step.protocol}: predicted {got}, expected {list(step.expected)}")
