"""The kwok provider as the e2e executor uses it: bring the cluster up (control plane, nodes,
stand-ins), check it, prove the steady state, leave a report, tear it down."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from kserve_gitops.base import redact
from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.controllers import binaries as controller_binaries
from kserve_gitops.controllers.processes import Controllers
from kserve_gitops.localcluster import binaries, checks, controlplane, pki
from kserve_gitops.localcluster.controlplane import ClusterConfig, ControlPlane, ControlPlaneError
from kserve_gitops.localcluster.standins import STAND_IN, StandIns
from kserve_gitops.node import addons, host, images, kept
from kserve_gitops.node import binaries as node_binaries
from kserve_gitops.node import config as node_config
from kserve_gitops.node.realnode import RealNode
from kserve_gitops.repo import Repo

Obj = Mapping[str, Any]


class ClusterCheckFailed(Exception):
    """Findings on the cluster's objects; the message lists each with object and field."""


def tool_path(bins: Mapping[str, Path]) -> str:
    """PATH for the run: the pinned helm and kubectl (the cluster's minor) first."""
    tools = [bins[name] for name in ("helm", "kubectl") if name in bins]
    dirs = [*(str(t.parent) for t in tools), str(Path(sys.executable).parent)]
    return os.pathsep.join([*dirs, os.environ.get("PATH", "")])


WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def _normal(obj: Obj) -> dict[str, Any]:
    """What a second apply must leave alone: the object minus status, server bookkeeping and
    the fields the stand-ins own (a webhook's failurePolicy and caBundle), which the harness
    sets again after every apply."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields", "generation")
    }
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != STAND_IN}
    meta["annotations"] = annotations
    if obj.get("kind") in WEBHOOK_KINDS:
        out["webhooks"] = [
            {
                **{k: v for k, v in hook.items() if k != "failurePolicy"},
                "clientConfig": {
                    k: v for k, v in (hook.get("clientConfig") or {}).items() if k != "caBundle"
                },
            }
            for hook in obj.get("webhooks") or []
        ]
    return {**out, "metadata": meta}


def changed_fields(before: Any, after: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ (the first difference on each branch)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            found += changed_fields(before.get(key), after.get(key), f"{path}.{key}")
        return found
    return [] if before == after else [path.lstrip(".") or "(whole object)"]


@dataclass
class KwokCluster:
    """One environment's kwok cluster of the checkout `repo`: its control plane, stand-ins and
    controller processes, with the checks and the report over them."""

    repo: Repo
    env: str
    echo: Callable[[str], None]
    plane: ControlPlane | None = None
    stand_ins: StandIns | None = None
    bins: dict[str, Path] = field(default_factory=dict)
    controllers: Controllers | None = None
    config: ClusterConfig | None = None  # default: e2e/kwok/cluster.yaml
    # A real node joins (kserve_gitops.node): kubelet, containerd, runc, kube-proxy.
    real_node: bool = False
    node: RealNode | None = None
    node_bins: dict[str, Path] = field(default_factory=dict)
    archives: dict[str, Path] = field(default_factory=dict)
    node_undone: list[str] = field(default_factory=list)

    def prepare(self) -> dict[str, Path]:
        """The binaries, built when missing (a cold build shows progress per binary), and the
        controllers that run in place of their kwok pods; with a real node, its binaries and
        images too."""
        self.bins = binaries.ensure(binaries.pinned(self.repo), self.echo)
        controller_binaries.ensure(self.repo, self.echo)
        if self.real_node:
            self.node_bins = binaries.ensure(node_binaries.pinned(self.repo), self.echo)
            self.archives = images.ensure(self.repo, self.echo)
        return self.bins

    def start_controllers(self, group: str) -> list[str]:
        """Run a group of controllers as processes (kserve_gitops.controllers.processes)."""
        if self.plane is None:
            raise RuntimeError("start the cluster before its controllers")
        if self.controllers is None:
            ca = pki.CA.load(
                (self.plane.pki / "ca.crt").read_bytes(), (self.plane.pki / "ca.key").read_bytes()
            )
            self.controllers = Controllers(
                self.repo,
                self.env,
                self.plane.dir,
                self.plane.kubeconfig,
                self.plane.ports["kube-apiserver"],
                ca,
                self.stand_ins,
                self.echo,
            )
            self.controllers.prepare()
            self.controllers.start_loop()
        return self.controllers.start(group)

    def start(self, runner: Runner) -> None:
        cfg = self.config or ClusterConfig.load(self.repo)
        self.plane = ControlPlane(self.repo, self.env, self.bins, cfg, self.echo)
        layout = None
        if self.real_node:
            if not cfg.node_cidr:
                raise ControlPlaneError(
                    f"{self.repo.rel(controlplane.config_file(self.repo))}: realNode.podCIDR: "
                    "missing; the real node's pods need an address range"
                )
            layout = node_config.layout(
                self.env,
                self.plane.dir,
                self.plane.slot,
                cfg.node_cidr,
                cfg.service_cidr,
                self.plane.ports,
            )
            # A run that was killed may have left mounts there: never delete through them.
            host.unmount_under(layout.dir, layout.run)
            self.plane.node_ip = layout.node_ip
        self.plane.start()
        nodes = self.plane.dir / "nodes.yaml"
        nodes.write_text(yaml.safe_dump_all(self.plane.node_manifests()))
        runner.run(["kubectl", "apply", "-f", str(nodes)], timeout=60)
        ca = pki.CA.load(
            (self.plane.pki / "ca.crt").read_bytes(), (self.plane.pki / "ca.key").read_bytes()
        )
        volumes = layout.dir / "volumes" if layout else None
        self.stand_ins = StandIns(
            self.plane.kubeconfig,
            ca,
            echo=self.echo,
            volume_root=volumes,
            real_pods=layout.pod_cidr if layout else None,
        )
        self.stand_ins.start()
        if layout is not None:
            refs = images.refs(self.repo)
            self.node = RealNode(
                layout,
                self.plane.server,
                ca,
                self.plane.kubeconfig,
                self.node_bins,
                list(self.archives.values()),
                refs["pause"],
                self.echo,
            )
            self.node.start()
            addons.apply(self.repo, runner, layout, refs)

    def settle(self) -> None:
        """The stand-ins' pass right after an apply: a `helm upgrade` restores the chart's
        failurePolicy Fail, which would block the next write until the loop's next pass."""
        if self.stand_ins is not None:
            self.stand_ins.reconcile()

    def stop(self, keep: bool) -> None:
        if self.node is not None and keep:
            self.node.keep()
        elif self.node is not None:
            self.node_undone = self.node.stop()
            for line in self.node_undone:
                self.echo(f"    node: {line}")
        if self.controllers is not None:
            self.controllers.stop()
        if self.stand_ins is not None:
            self.stand_ins.stop()
        if self.plane is not None:
            self.plane.stop(keep)

    # -- checks ----------------------------------------------------------------------------------

    def objects(self, runner: Runner) -> tuple[list[Obj], list[Obj]]:
        def get(kinds: str) -> list[Obj]:
            argv = ["kubectl", "get", kinds, "-A", "-o", "json"]
            return json.loads(runner.run(argv, timeout=120, quiet=True))["items"]

        return get(",".join(checks.KINDS)), get("events")

    def check(
        self, runner: Runner, unchecked: list[checks.Finding] | None = None
    ) -> list[checks.Finding]:
        objects, events = self.objects(runner)
        return checks.check(objects, events, unchecked)

    def live(self, runner: Runner, manifest: str) -> dict[str, dict[str, Any]]:
        """The live state of the objects a manifest names, by ref."""
        out = runner.run(["kubectl", "get", "-f", manifest, "-o", "json"], timeout=120, quiet=True)
        data = json.loads(out)
        items = data.get("items", [data]) if data.get("kind", "").endswith("List") else [data]
        return {checks.ref(o): _normal(o) for o in items}

    # -- report ----------------------------------------------------------------------------------

    def report(self, runner: Runner, dest: Path, layers: Mapping[str, Iterable[str]]) -> None:
        """Final state per layer (objects by kind, Deployments, Pods with node and phase),
        events, the stand-ins' actions and every component's log; each file redacted
        (kserve_gitops.base.redact: the objects read include every Secret)."""
        dest.mkdir(parents=True, exist_ok=True)
        try:
            objects, events = self.objects(runner)
        except (CommandError, ValueError) as exc:
            redact.write_text(dest / "state-error.txt", f"{exc}\n")
            return
        for layer, namespaces in layers.items():
            ns = set(namespaces)
            mine = [o for o in objects if (o.get("metadata") or {}).get("namespace") in ns]
            lines = [f"# layer {layer}: namespaces {', '.join(sorted(ns)) or '-'}", ""]
            lines += tabulate(sorted(checks.counts(mine).items()), tablefmt="plain").splitlines()
            lines += ["", "deployments:"]
            for dep in (o for o in mine if o["kind"] == "Deployment"):
                st = dep.get("status") or {}
                lines.append(
                    f"  {checks.ref(dep)}  available {st.get('availableReplicas', 0)}/"
                    f"{(dep.get('spec') or {}).get('replicas', 1)}"
                )
            lines += ["", "pods:"]
            for pod in (o for o in mine if o["kind"] == "Pod"):
                lines.append(
                    f"  {checks.ref(pod)}  node {(pod.get('spec') or {}).get('nodeName')}"
                    f"  phase {(pod.get('status') or {}).get('phase')}"
                )
            redact.write_text(dest / f"state-{layer}.txt", "\n".join(lines) + "\n")
        redact.write_text(dest / "events.json", json.dumps(events, indent=1))
        if self.stand_ins is not None:
            done = [*self.stand_ins.actions, *(f"error: {e}" for e in self.stand_ins.errors)]
            redact.write_text(dest / "stand-ins.txt", "\n".join(done) + "\n")
        if self.controllers is not None:
            redact.write_text(
                dest / "controllers.json", json.dumps(self.controllers.summary(), indent=1) + "\n"
            )
        if self.plane is not None:
            self.plane.save_logs(dest / "logs")
        if self.node is not None and (self.node.layout.dir / "logs").is_dir():
            # containerd's, the kubelet's and kube-proxy's logs, redacted like the others.
            redact.copy_tree(self.node.layout.dir / "logs", dest / "logs" / "node")


def summary_table(rows: list[tuple[str, int, int, int, float]]) -> str:
    """layer | passed | not run | failed | seconds, as the terminal's closing table."""
    head = ("layer", "passed", "not run", "failed", "seconds")
    return tabulate(rows, head, tablefmt="simple", floatfmt=".1f")


def run_env(kubeconfig: Path, bins: Mapping[str, Path]) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": tool_path(bins)}


def stop_kept(repo: Repo, env: str) -> list[str]:
    """Stop a cluster left running (KEEP=1): its real node first, if it has one (the machine's
    settings restored), then the control plane; what was stopped and undone."""
    cfg = ClusterConfig.load(repo)
    undone: list[str] = []
    if cfg.node_cidr:
        plane = ControlPlane(repo, env, {}, cfg)
        layout = node_config.layout(
            env, plane.dir, plane.slot, cfg.node_cidr, cfg.service_cidr, plane.ports
        )
        undone = [f"node: {line}" for line in kept.stop_kept(layout)]
    return [*undone, *controlplane.stop_kept(repo, env)]


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Stop a kwok cluster kept with KEEP=1.")
    parser.add_argument("action", choices=["stop"])
    parser.add_argument("env")
    args = parser.parse_args(argv)
    stopped = stop_kept(repo or Repo.discover(), args.env)
    print(f"stopped {', '.join(stopped) or 'nothing (no kept cluster)'} of {args.env}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
