"""`make e2e`: a kind cluster, the platform this repository declares, our model on it, real
predictions through the Istio ingress and the Locust SLO test; `make e2e-plan` prints the same
steps without touching anything.

    kgops e2e --env dev --plan    # the ordered plan, offline
    kgops e2e --env dev           # run it (needs Docker, kind, kubectl, helm)
    kgops e2e --env dev --keep    # ... and keep the cluster (or KEEP=1)

    kgops e2e --env dev --cluster kwok   # no Docker (kserve_gitops.localcluster)

Exit codes: 0 passed, 1 a step failed (diagnostics in reports/e2e-<timestamp>/), 3 preflight:
a tool is missing and nothing was started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kserve_gitops.controllers import canary, chain
from kserve_gitops.controllers.processes import ControllerError
from kserve_gitops.e2e import tools as cluster
from kserve_gitops.e2e.plan import (
    PROVIDERS,
    Apply,
    CheckCluster,
    ClusterCanary,
    CreateCluster,
    HelmInstall,
    LoadTest,
    NotRun,
    ObserveChain,
    Plan,
    Poll,
    Predict,
    Reapply,
    ResolveHost,
    Run,
    StartControllers,
    StartLocalCluster,
    Step,
    build,
    describe,
)
from kserve_gitops.e2e.tools import CommandError, Runner
from kserve_gitops.lifecycle import registry
from kserve_gitops.localcluster import binaries
from kserve_gitops.localcluster.checks import Finding
from kserve_gitops.localcluster.controlplane import ControlPlaneError
from kserve_gitops.localcluster.provider import KwokCluster, changed_fields, run_env, summary_table
from kserve_gitops.repo import Repo, paths
from kserve_gitops.repo.render import RenderError
from kserve_gitops.serving import client
from kserve_gitops.upstream import charts as upstream_charts

EXIT_FAILED = 1
EXIT_PREFLIGHT = 3


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


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


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
            case Predict():
                self._predict(step)
            case LoadTest():
                reports = self.report_dir / "loadtest"
                argv = step.argv(self.plan.ingress, self._host(), str(reports))
                self.runner.run([sys.executable, *argv[1:]], timeout=900, stream=True)

    def _observe(self, step: ObserveChain) -> None:
        """The chain's conditions into the report (chain.txt, summary.json) and the terminal;
        the step's outcome is the verdict."""
        verdict, links = chain.wait(
            str(self.plan.kubeconfig), step.namespace, step.name, step.timeout_s, self.echo
        )
        text = chain.render(links)
        (self.report_dir / "chain.txt").write_text(f"{verdict.status}: {verdict.reason}\n\n{text}")
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

    def _canary(self, step: ClusterCanary) -> None:
        reg = registry.load(Repo.discover(), step.model)
        version = canary.expected_version(reg, registry.state(reg, step.env).stable)
        lines = canary.run(
            step.env, step.model, step.namespace, version, step.percent, self.plan.kubeconfig,
            self.runner.env or dict(os.environ), self.workdir, self.echo,
        )  # fmt: skip
        (self.report_dir / "canary.txt").write_text("\n".join(lines) + "\n")
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
            raise StepFailed(f"{len(drift)} object(s) changed on a second apply:\n" +
                             "\n".join(drift))  # fmt: skip

    def _create_cluster(self, step: CreateCluster) -> None:
        step.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        existing = self.runner.run(["kind", "get", "clusters"], timeout=60).split()
        if step.name in existing:
            self.echo(f"    cluster {step.name} exists (a KEEP=1 run): reusing it")
            self.runner.run(
                ["kind", "export", "kubeconfig", "--name", step.name,
                 "--kubeconfig", paths.rel(step.kubeconfig)],
                timeout=60,
            )  # fmt: skip
            return
        self.runner.run(step.argv(), timeout=_seconds(step.wait) + 600, stream=True)

    def _helm(self, step: HelmInstall) -> None:
        values = self._file(f"values-{step.release}.yaml", yaml.safe_dump(dict(step.values)))
        argv = step.argv(values if step.values else None)
        for attempt in range(1, step.attempts + 1):
            try:
                self.runner.run(argv, timeout=_seconds(step.timeout) + 60)
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
        deadline = time.monotonic() + step.timeout_s
        policy = client.RetryPolicy(retries=3, backoff=0.5)
        while True:
            try:
                got = client.predict(
                    self.plan.ingress,
                    step.model,
                    step.instances,
                    step.protocol,
                    host_header=self._host(),
                    policy=policy,
                )
                break
            except client.PredictionError as exc:
                # 404: the gateway has no route for the Host yet (Istio config still spreading).
                if not (exc.transient or exc.status == 404) or time.monotonic() > deadline:
                    raise StepFailed(f"{step.protocol} prediction failed: {exc}") from exc
                self.echo(f"    not yet: {exc}")
                time.sleep(3)
        self.echo(f"    predictions {got}")
        if got != list(step.expected):
            raise StepFailed(f"{step.protocol}: predicted {got}, expected {list(step.expected)}")


# ---------------------------------------------------------------------------------------------
# Diagnostics: what a failed run leaves for whoever reads the CI artifact.
# ---------------------------------------------------------------------------------------------


def platform_namespaces(plan: Plan) -> list[str]:
    return list(dict.fromkeys(ns for names in layer_namespaces(plan).values() for ns in names))


KNATIVE_OBJECTS = ",".join(
    f"{kind}.serving.knative.dev" for kind in ("services", "configurations", "revisions", "routes")
)
ISTIO_ROUTING = "gateways.networking.istio.io,virtualservices.networking.istio.io"
WEBHOOKS = "validatingwebhookconfigurations,mutatingwebhookconfigurations"
# File in the diagnostics folder -> the command whose output it holds.
CLUSTER_WIDE: dict[str, str] = {
    "nodes.txt": "kubectl describe nodes",
    "events.txt": "kubectl get events -A --sort-by=.lastTimestamp",
    "pods.txt": "kubectl get pods -A -o wide",
    "helm-releases.txt": "helm list -A",
    "inferenceservices.yaml": "kubectl get inferenceservices -A -o yaml",
    "inferenceservices-describe.txt": "kubectl describe inferenceservices -A",
    "knativeserving.yaml": "kubectl get knativeservings -A -o yaml",
    "knative-serving-objects.yaml": f"kubectl get {KNATIVE_OBJECTS} -A -o yaml",
    "clusterservingruntimes.yaml": "kubectl get clusterservingruntimes -o yaml",
    "certificates.yaml": "kubectl get certificates,issuers -A -o yaml",
    "istio-routing.yaml": f"kubectl get {ISTIO_ROUTING} -A -o yaml",
    "webhooks.yaml": f"kubectl get {WEBHOOKS} -o yaml",
}


def collect_diagnostics(plan: Plan, runner: Runner, dest: Path) -> list[str]:
    """Best effort: each command that fails leaves its error in its file instead."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(name: str, argv: tuple[str, ...] | list[str]) -> str:
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            out = runner.run(list(argv), timeout=120, quiet=True)
        except (CommandError, OSError) as exc:
            out = f"# {exc}\n"
        path.write_text(out)
        written.append(name)
        return out

    for name, command in CLUSTER_WIDE.items():
        save(name, command.split())
    for ns in platform_namespaces(plan):
        save(f"{ns}/resources.txt", ("kubectl", "get", "all", "-n", ns, "-o", "wide"))
        save(f"{ns}/events.txt", ("kubectl", "get", "events", "-n", ns, "--sort-by=.lastTimestamp"))
        save(f"{ns}/pods-describe.txt", ("kubectl", "describe", "pods", "-n", ns))
        pods = save(
            f"{ns}/pod-names.txt",
            ("kubectl", "get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"),
        )
        for pod in pods.split() if not pods.startswith("#") else []:
            save(
                f"{ns}/logs/{pod}.log",
                ("kubectl", "logs", pod, "-n", ns, "--all-containers", "--prefix", "--tail=2000"),
            )
    if plan.provider == "kind":
        save(
            "kind-export-logs.txt",
            ("kind", "export", "logs", str(dest / "kind"), "--name", plan.cluster),
        )
    return written


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def layer_table(outcomes: list[Outcome]) -> str:
    rows: dict[str, list[float]] = {}
    for o in outcomes:
        row = rows.setdefault(o.layer, [0, 0, 0, 0.0])
        row[("passed", "not run", "failed").index(o.status)] += 1
        row[3] += o.seconds
    return summary_table([(k, int(r[0]), int(r[1]), int(r[2]), r[3]) for k, r in rows.items()])


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(plan: Plan, keep: bool, reports: Path, echo: Any = None) -> int:
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    # A CI timeout or `kill` tears the cluster down like Ctrl-C does (local processes survive
    # their parent otherwise).
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = reports / f"e2e-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "plan.txt").write_text(describe(plan))
    kwok = None
    env = {**os.environ, "KUBECONFIG": str(plan.kubeconfig)}
    if plan.provider == "kwok":
        kwok = KwokCluster(plan.env, echo)
        try:
            env = run_env(plan.kubeconfig, kwok.prepare())
        except binaries.BuildError as exc:
            echo(f"e2e {plan.env}: FAILED before any step: {exc}")
            return EXIT_FAILED
    runner = Runner(log=report_dir / "commands.log", echo=echo, env=env, cwd=paths.ROOT)
    executor = Executor(plan, runner, report_dir, echo, kwok=kwok)
    outcomes: list[Outcome] = []
    failure: str | None = None
    started = time.monotonic()
    total = len(plan.steps)
    try:
        for number, step in enumerate(plan.steps, start=1):
            echo(f"[{number}/{total}] {step.layer}: {step.title}")
            t0 = time.monotonic()
            try:
                executor.execute(step)
            except StepNotRun as exc:
                outcomes.append(Outcome(step.title, step.layer, 0.0, "not run", str(exc)))
                echo(f"    NOT RUN: {exc}")
                continue
            except (
                CommandError, StepFailed, ControlPlaneError, ControllerError,
                canary.CanaryError, client.PredictionError, OSError,
            ) as exc:  # fmt: skip
                outcomes.append(Outcome(step.title, step.layer, time.monotonic() - t0, "failed"))
                failure = f"step {number} ({step.layer}: {step.title}): {exc}"
                break
            took = time.monotonic() - t0
            outcomes.append(Outcome(step.title, step.layer, took, "passed"))
            echo(f"    ok ({took:.1f}s)")
    except KeyboardInterrupt:
        failure = "interrupted"
    if failure:
        echo("")
        echo(f"FAILED {failure}")
        echo(f"collecting diagnostics into {paths.rel(report_dir)} ...")
        collect_diagnostics(plan, runner, report_dir / "diagnostics")
    if kwok is not None and kwok.plane is not None:
        kwok.report(runner, report_dir / "cluster", layer_namespaces(plan))
    summary = {
        "env": plan.env,
        "provider": plan.provider,
        "cluster": plan.cluster,
        "result": "failed" if failure else "passed",
        "failure": failure,
        "seconds": round(time.monotonic() - started, 1),
        "host": executor.host,
        "stand_ins": kwok.stand_ins.actions if kwok and kwok.stand_ins else [],
        "webhooks_ignored": kwok.stand_ins.ignored if kwok and kwok.stand_ins else [],
        "not_checked": [str(f) for f in executor.unchecked],
        "controllers": kwok.controllers.summary() if kwok and kwok.controllers else {},
        "chain": executor.chain,
        "steps": [o.__dict__ for o in outcomes],
    }
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(executor.workdir, ignore_errors=True)  # the rendered values and manifests
    if kwok is not None:
        kwok.stop(keep)
        if keep and kwok.plane is not None:
            echo(f"kept the kwok cluster: export KUBECONFIG={kwok.plane.kubeconfig}")
            echo(f"  stop it with: kgops cluster stop {plan.env}")
    elif outcomes:  # the cluster step was reached: leave nothing behind unless asked
        if keep:
            echo(f"kept cluster {plan.cluster}: export KUBECONFIG={plan.kubeconfig}")
            echo(f"  delete it with: kind delete cluster --name {plan.cluster}")
        else:
            echo(f"deleting cluster {plan.cluster} (KEEP=1 keeps it)")
            try:
                runner.run(
                    ["kind", "delete", "cluster", "--name", plan.cluster,
                     "--kubeconfig", paths.rel(plan.kubeconfig)],
                    timeout=300,
                )  # fmt: skip
            except CommandError as exc:
                echo(f"warning: could not delete cluster {plan.cluster}: {exc}")
    echo("")
    echo(layer_table(outcomes))
    if kwok is not None and kwok.stand_ins is not None:
        echo(f"stand-ins (not the real components): {len(kwok.stand_ins.actions)} actions, "
             f"{len(kwok.stand_ins.ignored)} webhooks set to failurePolicy Ignore:")  # fmt: skip
        for hook in kwok.stand_ins.ignored:
            echo(f"  {hook}")
    if summary["controllers"]:  # as they were before the cluster stopped
        for line in chain.closing(summary["controllers"], executor.chain):
            echo(line)
    not_run = sum(o.status == "not run" for o in outcomes)
    verdict = "FAILED" if failure else "PASSED"
    extra = f" ({not_run} step(s) not run on {plan.provider})" if not_run else ""
    echo(f"e2e {plan.env}: {verdict}{extra} in {summary['seconds']}s, report "
         f"{paths.rel(report_dir)}")  # fmt: skip
    return EXIT_FAILED if failure else 0


def layer_namespaces(plan: Plan) -> dict[str, list[str]]:
    """Layer -> the namespaces its releases install into and its manifests declare."""
    found: dict[str, list[str]] = {}
    for step in plan.steps:
        names: list[str | None] = []
        if isinstance(step, HelmInstall):
            names.append(step.namespace)
        elif isinstance(step, Apply):
            for obj in step.objects:
                meta = obj.get("metadata") or {}
                names.append(meta.get("name") if obj.get("kind") == "Namespace" else None)
                names.append(meta.get("namespace"))
        layer = found.setdefault(step.layer, [])
        layer += [n for n in names if n and n not in layer]
    return {k: v for k, v in found.items() if v}


def preflight_message(problems: list[cluster.Problem], env: str) -> str:
    return "\n".join(
        [
            f"e2e: cannot start: {len(problems)} prerequisite(s) missing; nothing was created.",
            *(str(p) for p in problems),
            f"`make e2e-plan ENV={env}` prints what the run would do without any of them.",
        ]
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, choices=paths.ENVIRONMENT_NAMES)
    parser.add_argument("--plan", action="store_true", help="print the plan, touch nothing")
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get("KEEP") == "1",
        help="keep the cluster afterwards (default: KEEP=1 in the environment)",
    )
    parser.add_argument("--reports", type=Path, default=None, help="default reports/")
    parser.add_argument(
        "--cluster",
        choices=PROVIDERS,
        default=os.environ.get("CLUSTER") or "kind",
        help="kind (Docker) or kwok (a control plane built from source, no Docker)",
    )
    parser.add_argument(
        "--layers",
        default=os.environ.get("LAYERS", ""),
        help="comma-separated layers to run (with the cluster's steps and the checks); "
        "default: all",
    )
    parser.add_argument(
        "--delivery",
        choices=("direct", "flux"),
        default=os.environ.get("DELIVERY") or "direct",
        help="direct: the harness applies each layer; flux: Flux's controllers reconcile "
        "clusters/<env> (kwok only; kserve_gitops.delivery.e2e)",
    )
    args = parser.parse_args(argv)
    if args.delivery == "flux":
        if args.cluster != "kwok" or args.plan or args.layers:
            print("error: --delivery flux runs on --cluster kwok, without --plan or --layers",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
        from kserve_gitops.delivery import e2e as flux_e2e

        return flux_e2e.run(args.env, args.keep, args.reports or paths.REPORTS)
    if args.cluster == "kwok" and not args.plan:
        try:
            binaries.go_version()
        except binaries.BuildError as exc:
            # Under CI a missing toolchain is a failure, elsewhere a skip that says so.
            print(f"e2e: cannot start on kwok: {exc}; nothing was created", file=sys.stderr)
            return EXIT_FAILED if os.environ.get("CI") else EXIT_PREFLIGHT
    elif not args.plan:
        pins = Repo.discover().versions.get("kubernetes") or {}
        problems, warnings = cluster.preflight(str(pins.get("kind", "")), str(pins.get("version")))
        if problems:
            print(preflight_message(problems, args.env), file=sys.stderr)
            return EXIT_PREFLIGHT
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    try:
        layers = {x.strip() for x in args.layers.split(",") if x.strip()} or None
        plan = build(args.env, args.cluster, layers)
    except (RenderError, upstream_charts.ChartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.plan:
        sys.stdout.write(describe(plan))
        return 0
    return run(plan, args.keep, args.reports or paths.REPORTS)


if __name__ == "__main__":
    raise SystemExit(main())
