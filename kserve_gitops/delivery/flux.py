"""Flux's own controllers (source-controller, kustomize-controller, helm-controller, built from
their Go modules at the versions of versions.yaml `flux:`) as processes against a kwok cluster:
their CRDs, the ports they and the local sources (kserve_gitops.delivery.sources) listen on, and
the processes themselves.

They reconcile clusters/<env> through the test overlay (kserve_gitops.delivery.overlay); what
they did is read by kserve_gitops.delivery.reconciliation.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kserve_gitops.base.tools import Runner, stop_process
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.localcluster.controlplane import PORTS, port_in_use
from kserve_gitops.repo import Repo

NAMESPACE = "flux-system"
GIT_REPO = "kserve-gitops"
# Flux's port range: 24000-24499, below Linux's ephemeral range (32768-60999) where any
# outgoing connection (the API server's to etcd, say) may take a server port between the check
# and the bind. Clusters at 24000 + 10 * slot, local servers and controllers at 24100 + 20 * slot;
# slots 0-2 are the environments, 3 the behaviour tests.
CLUSTER_PORTS = 24000
SERVER_PORTS = 24100


class FluxError(Exception):
    """A Flux component that could not be prepared, started or that never got Ready."""


def slot(repo: Repo, name: str) -> int:
    """flux-<env> clusters take their environment's slot, any other name the one after."""
    names, env = repo.environment_names, name.removeprefix("flux-")
    return names.index(env) if env in names else len(names)


@dataclass(frozen=True)
class Ports:
    """The local servers' and controllers' ports: the first free ones of the cluster's window
    of 20. A port another program holds (or a test's server left) is skipped rather than
    fought over."""

    git: int
    charts: int
    registry: int
    storage: int
    health: dict[str, int]

    @classmethod
    def allocate(cls, repo: Repo, name: str) -> Ports:
        first = SERVER_PORTS + 20 * slot(repo, name)
        free = [p for p in range(first, first + 20) if not port_in_use(p)]
        need = 4 + len(binaries.FLUX_CONTROLLERS)
        if len(free) < need:
            raise FluxError(f"ports {first}-{first + 19}: {len(free)} free, {need} needed")
        return cls(*free[:4], dict(zip(binaries.FLUX_CONTROLLERS, free[4:need], strict=True)))


def cluster_port_base(repo: Repo, name: str) -> int:
    """ClusterConfig.port_base that puts cluster `name`'s control plane at the first start
    from CLUSTER_PORTS + 10 * slot on (wrapping within the 100 cluster ports) whose ports are
    all free: a port a client connection just left stays taken for a minute (TIME_WAIT). The
    control plane adds 10 * its own slot of the name to the base."""
    first, span = CLUSTER_PORTS + 10 * slot(repo, name), 100 - max(PORTS.values())
    for step in range(span):
        start = CLUSTER_PORTS + (first - CLUSTER_PORTS + step) % span
        if not any(port_in_use(start + offset) for offset in PORTS.values()):
            return start - 10 * controlplane.slot(repo, name)  # the control plane adds its slot
    raise FluxError(
        f"cluster {name}: no free ports for a control plane in {CLUSTER_PORTS}-{CLUSTER_PORTS + 99}"
    )


def crd_files(repo: Repo) -> list[Path]:
    """Every CRD of the pinned controllers, from their Go modules (config/crd/bases): the set
    `flux install` applies for them, Bucket and ExternalArtifact included, which the
    controllers watch."""
    found: list[Path] = []
    for binary in binaries.flux_pinned(repo):
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{binary.package}@{binary.version}"],
            cwd=binaries.outside_modules(),
            capture_output=True,
            text=True,
            check=False,
        )
        info = json.loads(proc.stdout or "{}")
        if proc.returncode != 0 or "Dir" not in info:
            raise FluxError(f"{binary.package}@{binary.version}: {info.get('Error', proc.stderr)}")
        found += sorted((Path(info["Dir"]) / "config" / "crd" / "bases").glob("*.yaml"))
    return found


@dataclass
class Controllers:
    """The three controllers as processes with the admin kubeconfig, leader election off,
    health on loopback; source-controller's artifact server on loopback too,
    advertised at that address so the other two fetch from it."""

    bins: Mapping[str, Path]
    kubeconfig: Path
    ports: Ports
    workdir: Path
    requeue_dependency: str = "5s"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def argv(self, name: str) -> list[str]:
        common = [
            "--metrics-addr=0",  # no metrics server: nothing scrapes it here
            f"--health-addr=127.0.0.1:{self.ports.health[name]}",
            "--enable-leader-election=false",
            "--watch-all-namespaces=true",
            "--log-encoding=console",
            # dependsOn is re-checked at this period (30s by default): shorter, so that the
            # chain's order shows in seconds rather than half minutes.
            f"--requeue-dependency={self.requeue_dependency}",
        ]
        if name == "source-controller":
            storage = f"127.0.0.1:{self.ports.storage}"
            common += [
                f"--storage-path={self.workdir / 'artifacts'}",
                f"--storage-addr={storage}",
                f"--storage-adv-addr={storage}",
            ]
        return [str(self.bins[name]), *common]

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start(self, timeout_s: float = 60) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "artifacts").mkdir(exist_ok=True)  # source-controller requires it
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RUNTIME_NAMESPACE": NAMESPACE,
            "HOME": str(self.workdir),
        }
        for name in binaries.FLUX_CONTROLLERS:
            with self.log(name).open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    self.argv(name),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.workdir,
                )
        for name in binaries.FLUX_CONTROLLERS:
            self._wait_ready(name, timeout_s)

    def _wait_ready(self, name: str, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.ports.health[name]}/readyz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise FluxError(f"{name}: not ready at {url} after {timeout_s:.0f}s: {self.tail(name)}")

    def tail(self, name: str, lines: int = 12) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise FluxError(f"{name} exited {proc.returncode}:\n{self.tail(name)}")

    def stop(self) -> None:
        for proc in self.procs.values():  # all at once, then each waited for
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            stop_process(proc, 15)
        self.procs.clear()


def install(
    runner: Runner,
    repo: Repo,
    bins: Mapping[str, Path],
    kubeconfig: Path,
    ports: Ports,
    workdir: Path,
) -> Controllers:
    """Flux on a running cluster, as `flux install` puts it there: the pinned CRDs
    (Established first: a controller whose kinds the API server does not serve yet exits at
    start), the flux-system namespace, then the controllers, started."""
    files = [a for p in crd_files(repo) for a in ("-f", str(p))]
    runner.run(["kubectl", "apply", "--server-side", *files], timeout=120)
    wait = ["kubectl", "wait", "--for=condition=Established", "--timeout=60s", *files]
    runner.run(wait, timeout=90)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    runner.run(["kubectl", "apply", "-f", "-"], stdin=yaml.safe_dump(namespace), timeout=60)
    controllers = Controllers(bins, kubeconfig, ports, workdir)
    controllers.start()
    return controllers
