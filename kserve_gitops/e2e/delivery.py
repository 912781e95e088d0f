"""`make e2e CLUSTER=kwok DELIVERY=flux ENV=<env>`: a kwok cluster, Flux's controllers, the
local sources, then only the Flux entry point clusters/<env> (through the local-source overlay)
is applied; Flux does the rest. Progress shows each Kustomization and HelmRelease with Ready and
its message as it changes; the run checks they became Ready in dependsOn order, then the same
cluster checks as the kwok e2e.

Exit codes: 0 passed, 1 failed (report in reports/e2e-flux-<env>-<timestamp>/), also when the
credential scan (gitleaks) finds something in the report folder. Everything the run writes or
prints is redacted (kserve_gitops.base.redact).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kserve_gitops.base import redact
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.checks import secret_scan
from kserve_gitops.delivery import flux, overlay, reconciliation, sources
from kserve_gitops.e2e.layer_plan import MONITORING_GROUP
from kserve_gitops.e2e.provider import KwokCluster, run_env
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.localcluster.checks import Finding
from kserve_gitops.localcluster.controlplane import ClusterConfig, ControlPlaneError
from kserve_gitops.repo import Repo
from kserve_gitops.upstream import crds
from kserve_gitops.upstream.charts import ChartError

EXIT_FAILED = 1
# helm-controller leaves an object carrying this annotation (value "disabled") out of drift
# detection (helm-controller api v2 DriftDetectionMetadataKey).
DRIFT_OPT_OUT = "helm.toolkit.fluxcd.io/driftDetection"


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class FluxCluster:
    """A kwok cluster named `name` with Flux's CRDs and controllers and the local sources
    serving the repository snapshot at `work` (a git work tree; the server serves its bare
    clone). Used by the e2e and the GitOps behaviour tests. `repo`: the checkout whose
    clusters/ and pins it runs."""

    repo: Repo
    name: str
    workdir: Path
    echo: Callable[[str], None]
    log: Path
    kwok: KwokCluster = field(init=False)
    runner: Runner = field(init=False)
    controllers: flux.Controllers | None = None
    servers: list[sources.HTTPServer] = field(default_factory=list)
    registry: sources.Registry | None = None
    drift_excluded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        repo = self.repo
        config = replace(
            ClusterConfig.load(repo), port_base=flux.cluster_port_base(repo, self.name)
        )
        self.kwok = KwokCluster(repo, self.name, self.echo, config=config)
        self.ports = flux.Ports.allocate(repo, self.name)

    @property
    def git_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.git}/{flux.GIT_REPO}.git"

    @property
    def charts_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.charts}"

    @property
    def work(self) -> Path:
        return self.workdir / "git" / flux.GIT_REPO

    def start(self) -> None:
        # The control plane's binaries and Flux's; not the KServe/Knative controllers the direct
        # e2e runs in place of their pods (here their charts' pods are kwok's, as Flux sees them).
        repo = self.repo
        bins = binaries.ensure(binaries.pinned(repo), self.echo)
        bins |= binaries.ensure(
            [*binaries.flux_pinned(repo), binaries.oci_registry(repo)], self.echo
        )
        self.kwok.bins = bins
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        kubeconfig = controlplane.kubeconfig_file(repo, self.name)
        env = {**run_env(kubeconfig, bins), "KGOPS_ROOT": str(repo.root)}
        self.runner = Runner(self.log, self.echo, env, repo.root)
        self.kwok.start(self.runner)
        self.controllers = flux.install(
            self.runner, repo, bins, kubeconfig, self.ports, self.workdir / "flux"
        )
        self.echo(f"    Flux controllers ready: {', '.join(binaries.FLUX_CONTROLLERS)}")

    def serve_git(self) -> str:
        commit = sources.snapshot(self.repo, self.work)
        server = sources.git_server(self.work.parent, self.ports.git)
        server.start()
        self.servers.append(server)
        self.echo(
            f"    Git: {self.git_url} branch main at {commit[:12]} (snapshot of the work tree)"
        )
        return commit

    def serve_charts(self, env: str, chart_srcs: list[overlay.Source]) -> list[str]:
        self.registry = sources.Registry(
            self.kwok.bins["registry"], self.workdir / "registry", self.ports.registry
        )
        self.registry.start()
        served = overlay.serve_charts(
            self.repo,
            env,
            chart_srcs,
            self.kwok.bins["helm"],
            self.registry,
            self.workdir,
            self.charts_url,
        )
        server = sources.static_server(self.workdir / "helm", self.ports.charts)
        server.start()
        self.servers.append(server)
        for line in served:
            self.echo(f"    chart {line}")
        return served

    def tick(self) -> None:
        """Between polls: the stand-ins' pass (a Helm install restores failurePolicy Fail),
        the drift exclusion of what they changed, and a check that no controller died."""
        self.kwok.settle()
        self.exclude_stand_ins_from_drift()
        if self.controllers is not None:
            self.controllers.check_alive()

    def exclude_stand_ins_from_drift(self) -> None:
        """A webhook configuration whose failurePolicy the stand-ins set to Ignore (no webhook
        server on kwok) would be "corrected" back by helm-controller's drift detection, and set
        again by the stand-ins, forever: Flux's own opt-out annotation takes such an object out
        of drift detection, on this cluster only, and the report lists each one."""
        stand_ins = self.kwok.stand_ins
        for key in stand_ins.ignored if stand_ins is not None else []:
            kind, config, _hook = key.split("/", 2)
            if f"{kind}/{config}" in self.drift_excluded:
                continue
            self.runner.run(
                [
                    "kubectl",
                    "annotate",
                    kind.lower(),
                    config,
                    f"{DRIFT_OPT_OUT}=disabled",
                    "--overwrite",
                ],
                timeout=60,
                quiet=True,
            )
            self.drift_excluded.append(f"{kind}/{config}")
            self.echo(f"    stand-in: {kind}/{config}: {DRIFT_OPT_OUT}=disabled (stand-in field)")

    def report(self, dest: Path, namespaces: dict[str, list[str]]) -> None:
        self.kwok.report(self.runner, dest / "cluster", namespaces)
        if self.controllers is not None:
            redact.copy_tree(self.controllers.workdir / "logs", dest / "flux")
        if self.registry is not None and self.registry.log.is_file():
            redact.copy_tree(self.registry.log, dest / "flux" / "registry.log")

    def stop(self, keep: bool = False) -> None:
        if self.controllers is not None:
            self.controllers.stop()
        for server in self.servers:
            server.stop()
        if self.registry is not None:
            self.registry.stop()
        self.kwok.stop(keep)
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(
    repo: Repo, env: str, keep: bool, reports: Path, timeout_s: float = 1200, echo: Any = None
) -> int:
    echo = redact.echoing(echo or (lambda line: print(line, file=sys.stderr, flush=True)))
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = reports / f"e2e-flux-{env}-{stamp}"
    report_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        fc = FluxCluster(
            repo, f"flux-{env}", repo.cache / "flux" / env, echo, report_dir / "commands.log"
        )
    except flux.FluxError as exc:
        echo(f"e2e flux {env}: FAILED: {exc}; nothing was started")
        return EXIT_FAILED
    timeline = reconciliation.Timeline(echo)
    failure: str | None = None
    notes: list[str] = []
    phases: list[tuple[str, float]] = []
    served: list[str] = []
    expected: list[str] = []
    unchecked: list[Finding] = []  # what the cluster checks could not check on kwok

    def phase(title: str) -> None:
        phases.append((title, time.monotonic() - started))
        echo(f"[{len(phases)}] {title}")

    try:
        phase("kwok cluster, Flux CRDs and controllers")
        fc.start()
        phase("local sources: Git, Helm repository, OCI registry")
        fc.serve_git()
        chart_srcs = overlay.chart_sources(repo, env)
        served = fc.serve_charts(env, chart_srcs)
        # What clusters/<env> expects the cluster to have (as the kwok e2e installs it): the
        # Prometheus Operator CRDs platform-monitoring's objects need, pinned in config/crds.tsv.
        monitoring = [p for p in crds.ensure(repo) if p.name.startswith(f"{MONITORING_GROUP}_")]
        fc.runner.run(
            ["kubectl", "apply", "--server-side", *(a for p in monitoring for a in ("-f", str(p)))],
            timeout=120,
        )
        overlay_dir = overlay.overlay(
            repo,
            env,
            fc.workdir / "overlay",
            fc.git_url,
            chart_srcs,
            fc.charts_url,
            fc.registry.address if fc.registry else "",
        )
        phase(f"apply the Flux entry point clusters/{env} (overlay {repo.rel(overlay_dir)})")
        echo(
            "    test overlay: the HelmReleases' healthCheckExprs are dropped (no KServe controller"
            " runs on kwok to set an InferenceService's Ready); helm-controller uses kstatus"
        )
        fc.runner.run(["kubectl", "apply", "-k", str(overlay_dir)], timeout=120)
        top = overlay.entry_objects(repo, env)
        expected = [
            reconciliation.key(o) for o in top if o.get("kind") in reconciliation.READY_KINDS
        ]
        phase(f"Flux reconciles: {len(expected)} Kustomizations, HelmReleases as they appear")
        timeline.started = time.monotonic()
        waiting = reconciliation.wait_ready(fc.runner, timeline, expected, timeout_s, fc.tick)
        if waiting:
            failure = f"not Ready after {timeout_s:.0f}s:\n" + "\n".join(f"  {w}" for w in waiting)
        else:
            violations = reconciliation.order_violations(timeline.objects, timeline.ready_at)
            if violations:
                failure = "dependsOn order violated:\n" + "\n".join(f"  {v}" for v in violations)
        for name, obj in sorted(timeline.objects.items()):
            if name.startswith("Kustomization/"):
                refs = reconciliation.inventory(obj)
            elif name.startswith("HelmRelease/"):
                refs = reconciliation.release_objects(fc.runner, obj)
            else:
                continue
            notes += [f"{name}: {u}" for u in reconciliation.unreconciled(fc.runner, refs)]
        if not failure:
            phase("cluster checks")
            findings = fc.kwok.check(fc.runner, unchecked)
            for note in unchecked:
                echo(f"    not checked: {note}")
            if findings:
                failure = f"{len(findings)} finding(s):\n" + "\n".join(f"  {f}" for f in findings)
    except (
        CommandError,
        flux.FluxError,
        sources.SourceError,
        binaries.BuildError,
        ControlPlaneError,
        ChartError,
        OSError,
    ) as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted"
    if failure:
        echo(f"FAILED: {failure}")
    try:
        if fc.kwok.plane is not None:
            fc.report(report_dir, reconciliation.layer_namespaces(timeline.objects))
    except (CommandError, OSError) as exc:
        echo(f"warning: report incomplete: {exc}")
    finally:
        fc.stop(keep)
    order = timeline.order()
    summary = {
        "env": env,
        "delivery": "flux",
        "flux": {b.name: b.version for b in binaries.flux_pinned(repo)},
        "result": "failed" if failure else "passed",
        "failure": failure,
        "seconds": round(time.monotonic() - started, 1),
        "phases": [{"title": t, "at": round(s, 1)} for t, s in phases],
        "served": served,
        "ready_order": [{"object": n, "seconds": round(t, 1)} for n, t in order],
        "ready_by_absence_of_status": notes,
        "drift_detection_disabled_for_stand_ins": fc.drift_excluded,
        "not_checked": [str(f) for f in unchecked],
        "timeline": timeline.lines,
    }
    redact.write_text(report_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    redact.write_text(report_dir / "timeline.txt", "\n".join(timeline.lines) + "\n")
    failure = secret_scan.seal_report(repo, report_dir, summary, failure, echo)
    echo("")
    echo(f"Ready order ({env}, seconds after the apply):")
    for n, t in order:
        echo(f"  {t:6.1f}s  {n}")
    if notes:
        echo("Ready although nothing reconciles them on kwok (no status, kstatus: Current):")
        for note in notes:
            echo(f"  {note}")
    verdict = "FAILED" if failure else "PASSED"
    echo(f"e2e flux {env}: {verdict} in {summary['seconds']}s, report {repo.rel(report_dir)}")
    return EXIT_FAILED if failure else 0


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    import argparse

    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, choices=repo.environment_names)
    parser.add_argument("--keep", action="store_true", default=os.environ.get("KEEP") == "1")
    parser.add_argument("--reports", type=Path, default=repo.reports)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for Flux to settle")
    args = parser.parse_args(argv)
    return run(repo, args.env, args.keep, args.reports, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
