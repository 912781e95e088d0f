"""`make e2e`: a kind cluster, the platform this repository declares, our model on it, real
predictions through the Istio ingress and the Locust SLO test; `make e2e-plan` prints the same
steps without touching anything.

    kgops e2e --env dev --plan    # the ordered plan, offline
    kgops e2e --env dev           # run it (needs Docker, kind, kubectl, helm)
    kgops e2e --env dev --keep    # ... and keep the cluster (or KEEP=1)

    kgops e2e --env dev --cluster kwok   # no Docker (kserve_gitops.localcluster)

Exit codes: 0 passed, 1 a step failed (diagnostics in reports/e2e-<timestamp>/) or the
credential scan (gitleaks) found something in the report folder, 3 preflight: a tool is missing
and nothing was started. Everything the run writes or prints is redacted
(kserve_gitops.base.redact).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kserve_gitops.base import redact, tools
from kserve_gitops.base.process import ProcessError
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.checks import secret_scan
from kserve_gitops.controllers import canary, chain
from kserve_gitops.controllers.processes import ControllerError
from kserve_gitops.e2e.describe import describe
from kserve_gitops.e2e.diagnostics import collect_diagnostics, layer_namespaces
from kserve_gitops.e2e.executor import Executor, Outcome, StepFailed, StepNotRun
from kserve_gitops.e2e.layer_plan import LOCAL
from kserve_gitops.e2e.node_plan import RELIABILITY_SCENARIOS
from kserve_gitops.e2e.paths import PathError
from kserve_gitops.e2e.plan import PROVIDERS, build
from kserve_gitops.e2e.provider import KwokCluster, run_env, summary_table
from kserve_gitops.e2e.steps import Plan
from kserve_gitops.localcluster import binaries
from kserve_gitops.localcluster.controlplane import ControlPlaneError
from kserve_gitops.node.realnode import NodeError
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError
from kserve_gitops.serving import client
from kserve_gitops.upstream import charts as upstream_charts

EXIT_FAILED = 1
EXIT_PREFLIGHT = 3


def layer_table(outcomes: list[Outcome]) -> str:
    rows: dict[str, list[float]] = {}
    for o in outcomes:
        row = rows.setdefault(o.layer, [0, 0, 0, 0.0])
        row[("passed", "not run", "failed").index(o.status)] += 1
        row[3] += o.seconds
    return summary_table([(k, int(r[0]), int(r[1]), int(r[2]), r[3]) for k, r in rows.items()])


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# What a step (or the measurement after the steps) may raise: a failure, never a crash that
# leaves the cluster and the real node's changes behind.
STEP_ERRORS = (
    CommandError,
    StepFailed,
    ControlPlaneError,
    ControllerError,
    NodeError,
    ProcessError,
    canary.CanaryError,
    client.PredictionError,
    OSError,
)


def run(
    plan: Plan,
    keep: bool,
    reports: Path,
    echo: Any = None,
    then: Callable[[Executor], None] | None = None,
) -> int:
    """Every step of `plan`, then `then` (a measurement that needs the cluster as the steps
    left it, its controllers still running) when they all passed; the report, then the stop."""
    echo = redact.echoing(echo or (lambda line: print(line, file=sys.stderr, flush=True)))
    # A CI timeout or `kill` tears the cluster down like Ctrl-C does (local processes survive
    # their parent otherwise).
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = reports / f"e2e-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    redact.write_text(report_dir / "plan.txt", describe(plan))
    repo = plan.repo
    kwok = None
    env = {**os.environ, "KUBECONFIG": str(plan.kubeconfig)}
    if plan.provider in LOCAL:
        kwok = KwokCluster(repo, plan.env, echo, real_node=plan.provider == "node")
        try:
            env = run_env(plan.kubeconfig, kwok.prepare())
        except binaries.BuildError as exc:
            echo(f"e2e {plan.env}: FAILED before any step: {exc}")
            return EXIT_FAILED
    # Every command runs in the checkout; a command of ours (the load test) is told which it is.
    env = {**env, "KGOPS_ROOT": str(repo.root)}
    runner = Runner(log=report_dir / "commands.log", echo=echo, env=env, cwd=repo.root)
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
            except STEP_ERRORS as exc:
                outcomes.append(Outcome(step.title, step.layer, time.monotonic() - t0, "failed"))
                failure = f"step {number} ({step.layer}: {step.title}): {exc}"
                break
            took = time.monotonic() - t0
            outcomes.append(Outcome(step.title, step.layer, took, "passed"))
            echo(f"    ok ({took:.1f}s)")
        if then is not None and failure is None:
            echo("[then] on the cluster the steps left")
            try:
                then(executor)
            except (*STEP_ERRORS, PathError) as exc:
                failure = f"after the steps: {exc}"
    except KeyboardInterrupt:
        failure = "interrupted"
    if failure:
        echo("")
        echo(f"FAILED {failure}")
        echo(f"collecting diagnostics into {repo.rel(report_dir)} ...")
        collect_diagnostics(plan, runner, report_dir / "diagnostics")
    executor.paths.close()
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
        "cluster_paths": executor.paths.measures,
        "steps": [o.__dict__ for o in outcomes],
    }
    redact.write_text(report_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(executor.workdir, ignore_errors=True)  # the rendered values and manifests
    if kwok is not None:
        kwok.stop(keep)
        if kwok.node is not None:  # what the real node changed on the machine, undone
            summary["node_restored"] = kwok.node_undone
            (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
                    [
                        "kind",
                        "delete",
                        "cluster",
                        "--name",
                        plan.cluster,
                        "--kubeconfig",
                        repo.rel(plan.kubeconfig),
                    ],
                    timeout=300,
                )
            except CommandError as exc:
                echo(f"warning: could not delete cluster {plan.cluster}: {exc}")
    failure = secret_scan.seal_report(repo, report_dir, summary, failure, echo)
    echo("")
    echo(layer_table(outcomes))
    if kwok is not None and kwok.stand_ins is not None:
        echo(
            f"stand-ins (not the real components): {len(kwok.stand_ins.actions)} actions, "
            f"{len(kwok.stand_ins.ignored)} webhooks set to failurePolicy Ignore:"
        )
        for hook in kwok.stand_ins.ignored:
            echo(f"  {hook}")
    if summary["controllers"]:  # as they were before the cluster stopped
        for line in chain.closing(summary["controllers"], executor.chain):
            echo(line)
    not_run = sum(o.status == "not run" for o in outcomes)
    verdict = "FAILED" if failure else "PASSED"
    extra = f" ({not_run} step(s) not run on {plan.provider})" if not_run else ""
    echo(
        f"e2e {plan.env}: {verdict}{extra} in {summary['seconds']}s, report {repo.rel(report_dir)}"
    )
    return EXIT_FAILED if failure else 0


def preflight_message(problems: list[tools.Problem], env: str) -> str:
    return "\n".join(
        [
            f"e2e: cannot start: {len(problems)} prerequisite(s) missing; nothing was created.",
            *(str(p) for p in problems),
            f"`make e2e-plan ENV={env}` prints what the run would do without any of them.",
        ]
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, choices=repo.environment_names)
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
        help="kind (Docker), kwok (a control plane built from source, no Docker) or node (kwok "
        "plus a real node: kubelet, containerd, runc; root)",
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
        "clusters/<env> (kwok only; kserve_gitops.e2e.delivery)",
    )
    parser.add_argument(
        "--reliability",
        action="store_true",
        default=os.environ.get("RELIABILITY") == "1",
        help="after the verification, the reliability scenarios under open-loop load: the model "
        "container killed, the kubelet and containerd restarted, a broken release Flux rolls "
        "back, a canary rollout, scale from zero (--cluster node; default: RELIABILITY=1 in the "
        "environment)",
    )
    parser.add_argument(
        "--scenarios",
        default=os.environ.get("SCENARIOS", ""),
        help="with --reliability, comma-separated scenarios to run, in their usual order "
        f"(default: all of {', '.join(RELIABILITY_SCENARIOS)})",
    )
    args = parser.parse_args(argv)
    if args.delivery == "flux":
        if args.cluster != "kwok" or args.plan or args.layers:
            print(
                "error: --delivery flux runs on --cluster kwok, without --plan or --layers",
                file=sys.stderr,
            )
            return EXIT_FAILED
        from kserve_gitops.e2e import delivery as flux_e2e

        return flux_e2e.run(repo, args.env, args.keep, args.reports or repo.reports)
    if args.cluster in LOCAL and not args.plan:
        try:
            binaries.go_version()
        except binaries.BuildError as exc:
            # Under CI a missing toolchain is a failure, elsewhere a skip that says so.
            print(f"e2e: cannot start on kwok: {exc}; nothing was created", file=sys.stderr)
            return EXIT_FAILED if os.environ.get("CI") else EXIT_PREFLIGHT
    elif not args.plan:
        pins = repo.versions.get("kubernetes") or {}
        problems, warnings = tools.preflight(str(pins.get("kind", "")), repo.kubernetes_version)
        if problems:
            print(preflight_message(problems, args.env), file=sys.stderr)
            return EXIT_PREFLIGHT
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    try:
        layers = {x.strip() for x in args.layers.split(",") if x.strip()} or None
        scenarios = tuple(x.strip() for x in args.scenarios.split(",") if x.strip())
        plan = build(repo, args.env, args.cluster, layers, args.reliability, scenarios or None)
    except (RenderError, upstream_charts.ChartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.plan:
        sys.stdout.write(describe(plan))
        return 0
    return run(plan, args.keep, args.reports or repo.reports)


if __name__ == "__main__":
    raise SystemExit(main())
