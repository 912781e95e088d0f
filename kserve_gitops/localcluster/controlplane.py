"""A real Kubernetes control plane as processes of this user on loopback: etcd, kube-apiserver
(Pod Security admission on, webhook Services resolved to their endpoints), kube-controller-manager,
kube-scheduler, and kwok standing in for the kubelet on fake nodes (e2e/kwok/cluster.yaml).

Everything lives under .cache/e2e/<env>/ (certificates, etcd data, logs, kubeconfig). A port in
use, a missing binary or a component that does not become ready raises ControlPlaneError within
seconds, naming the component, the port and the tail of its log. Each component's command line:
components.py.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.base import redact
from kserve_gitops.base.process import tail
from kserve_gitops.base.tools import stop_process
from kserve_gitops.localcluster import components, pki
from kserve_gitops.localcluster.components import KWOK_NODE_ANNOTATION
from kserve_gitops.repo import Repo

# Component -> offset from the environment's first port.
PORTS = {
    "etcd": 0,
    "etcd-peer": 1,
    "kube-apiserver": 2,
    "kube-controller-manager": 3,
    "kube-scheduler": 4,
    "kwok": 5,
    # The real node's (kserve_gitops.node), when one joins.
    "kubelet": 6,
    "kubelet-healthz": 7,
    "kube-proxy-healthz": 8,
    "kube-proxy-metrics": 9,
}


SLOTS = 16  # clusters that can run side by side: ports and pod addresses are split this way


def config_file(repo: Repo) -> Path:
    """e2e/kwok/cluster.yaml: the kwok cluster's nodes, address ranges and ports."""
    return repo.e2e / "kwok" / "cluster.yaml"


def cluster_dir(repo: Repo, name: str) -> Path:
    """.cache/e2e/<name>/: a kwok cluster's certificates, etcd data, logs and kubeconfig."""
    return repo.cache / "e2e" / name


def kubeconfig_file(repo: Repo, name: str) -> Path:
    return cluster_dir(repo, name) / "kubeconfig"


def slot(repo: Repo, name: str) -> int:
    """The environments first, in promotion order; any other cluster (a test's) by a stable
    hash of its name into the slots after them."""
    names = repo.environment_names
    if name in names:
        return names.index(name)
    return len(names) + zlib.crc32(name.encode()) % (SLOTS - len(names))


class ControlPlaneError(Exception):
    """A component that could not start or become ready; says which, where and why."""


@dataclass(frozen=True)
class ClusterConfig:
    nodes: int
    cpu: str
    memory: str
    pods: int
    zones: tuple[str, ...]
    pod_cidr: str
    service_cidr: str
    port_base: int
    local_route: str
    node_cidr: str | None = None  # realNode.podCIDR: the real nodes' pod ranges

    @classmethod
    def load(cls, repo: Repo, path: Path | None = None) -> ClusterConfig:
        """`path` (default e2e/kwok/cluster.yaml of the checkout)."""
        path = path or config_file(repo)
        data = yaml.safe_load(path.read_text()) or {}
        nodes = data.get("nodes") or {}
        try:
            cfg = cls(
                int(nodes["count"]),
                str(nodes["cpu"]),
                str(nodes["memory"]),
                int(nodes["pods"]),
                tuple(nodes.get("zones") or ()),
                str(data["podCIDR"]),
                str(data["serviceCIDR"]),
                int(data["portBase"]),
                str(data["localRoute"]),
                str((data.get("realNode") or {}).get("podCIDR") or "") or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlPlaneError(
                f"{repo.rel(path)}: field {exc}: expected nodes.count/cpu/memory/pods, podCIDR, "
                "serviceCIDR, portBase and localRoute"
            ) from exc
        route = ipaddress.ip_network(cfg.local_route)
        for name, cidr in (("podCIDR", cfg.pod_cidr), ("serviceCIDR", cfg.service_cidr)):
            if not ipaddress.ip_network(cidr).subnet_of(route):  # type: ignore[arg-type]
                raise ControlPlaneError(
                    f"{repo.rel(path)}: {name} {cidr} is outside localRoute {route}: its "
                    "addresses would not stay on this machine"
                )
        return cfg


def ensure_local_route(cidr: str) -> None:
    """Route `cidr` to this machine (as 127.0.0.0/8 is): connections to any address in it
    reach sockets listening here, and nothing sent there leaves the machine."""
    shown = subprocess.run(
        ["ip", "route", "show", "table", "local", cidr], capture_output=True, text=True, check=False
    )
    if shown.returncode == 0 and shown.stdout.strip():
        return
    added = subprocess.run(
        ["ip", "route", "add", "local", cidr, "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        raise ControlPlaneError(
            f"kwok: cannot route {cidr} to this machine (`ip route add local {cidr} dev lo`: "
            f"{added.stderr.strip()}); run as root, or run that command once with sudo"
        )


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class ControlPlane:
    """One environment's cluster. `start()` brings every component up and registers the nodes;
    `stop()` ends them (and removes the folder unless `keep`). Its folder is
    .cache/e2e/<env> of the checkout `repo`."""

    repo: Repo
    env: str
    binaries: dict[str, Path]
    config: ClusterConfig
    echo: Callable[[str], None] = print
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: bool = False
    # The real node's address (kserve_gitops.node), when one joins: the API server then also
    # listens there for the node's pods, and reaches its kubelet with a client certificate.
    node_ip: str | None = None

    def __post_init__(self) -> None:
        self.dir = cluster_dir(self.repo, self.env)
        self.slot = slot(self.repo, self.env)
        first = self.config.port_base + 10 * self.slot
        self.ports = {name: first + offset for name, offset in PORTS.items()}
        self.kubeconfig = kubeconfig_file(self.repo, self.env)
        self.logs = self.dir / "logs"
        self.pki = self.dir / "pki"

    @property
    def pod_cidr(self) -> str:
        """This cluster's share of podCIDR (one of SLOTS), so that clusters side by side never
        give two pods one address."""
        return str(
            list(ipaddress.ip_network(self.config.pod_cidr).subnets(prefixlen_diff=4))[self.slot]
        )

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    # -- certificates and kubeconfig -------------------------------------------------------------

    def _write_pki(self) -> None:
        ca = pki.CA.create("kgops-kwok-ca")
        pki.write(self.pki / "ca.crt", ca.cert_pem)
        pki.write(self.pki / "ca.key", ca.key_pem)
        cert, key = ca.issue(
            "kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", self._service_ip(), *([self.node_ip] if self.node_ip else [])),
        )
        pki.write(self.pki / "apiserver.crt", cert)
        pki.write(self.pki / "apiserver.key", key)
        cert, key = ca.issue("kgops-admin", org="system:masters", client=True)
        pki.write(self.pki / "admin.crt", cert)
        pki.write(self.pki / "admin.key", key)
        private, public = pki.service_account_keys()
        pki.write(self.pki / "sa.key", private)
        pki.write(self.pki / "sa.pub", public)
        b64 = lambda name: base64.b64encode((self.pki / name).read_bytes()).decode()  # noqa: E731
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": f"kgops-{self.env}",
                    "cluster": {"server": self.server, "certificate-authority-data": b64("ca.crt")},
                },
            ],
            "users": [
                {
                    "name": "kgops-admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                },
            ],
            "contexts": [
                {
                    "name": f"kgops-{self.env}",
                    "context": {"cluster": f"kgops-{self.env}", "user": "kgops-admin"},
                },
            ],
            "current-context": f"kgops-{self.env}",
        }
        pki.write(self.kubeconfig, yaml.safe_dump(kubeconfig).encode())

    def _service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.config.service_cidr).hosts()))

    # -- processes -------------------------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        p, d, k = self.ports, self.pki, self.kubeconfig
        match name:
            case "etcd":
                return components.etcd(self.dir, p)
            case "kube-apiserver":
                return components.kube_apiserver(p, d, self.config.service_cidr, self.node_ip)
            case "kube-controller-manager":
                return components.kube_controller_manager(p, d, k, self.config.service_cidr)
            case "kube-scheduler":
                return components.client_args(name, p, k)
            case "kwok":
                return components.kwok(p, k, self.pod_cidr)
        raise ControlPlaneError(f"unknown component {name}")

    def _spawn(self, name: str) -> None:
        binary = self.binaries.get(name)
        if binary is None or not binary.is_file():
            raise ControlPlaneError(f"{name}: binary missing ({binary}); `make binaries` builds it")
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(binary), *self._argv(name)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a kept cluster (KEEP=1) outlives the harness
        )
        log.close()
        (self.dir / "pids").mkdir(exist_ok=True)
        (self.dir / "pids" / name).write_text(str(self.procs[name].pid))

    def _ssl(self, verify: bool) -> ssl.SSLContext:
        if not verify:
            return ssl._create_unverified_context()  # self-signed serving certs of kcm/scheduler
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_http(self, name: str, url: str, timeout_s: float, verify: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode} before it was ready (port "
                    f"{self.ports[name]}); log {self.repo.rel(self.logs / f'{name}.log')}:\n"
                    f"{tail(self.logs / f'{name}.log')}"
                )
            try:
                ctx = self._ssl(verify) if url.startswith("https") else None
                with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise ControlPlaneError(
            f"{name} not ready after {timeout_s:g}s at {url} ({last}); log "
            f"{self.repo.rel(self.logs / f'{name}.log')}:\n{tail(self.logs / f'{name}.log')}"
        )

    def start(self) -> None:
        # Every port first: a cluster already running here (KEEP=1) keeps its folder.
        for name, port in self.ports.items():
            if port_in_use(port):
                raise ControlPlaneError(
                    f"{name}: port 127.0.0.1:{port} is in use (a kept cluster of {self.env}? "
                    f"`kgops cluster stop {self.env}`; or "
                    f"another portBase in {self.repo.rel(config_file(self.repo))})"
                )
        ensure_local_route(self.config.local_route)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.started = True
        self._write_pki()
        p = self.ports
        steps: list[tuple[str, str | None, bool]] = [
            ("etcd", f"http://127.0.0.1:{p['etcd']}/health", True),
            ("kube-apiserver", f"{self.server}/readyz", True),
            (
                "kube-controller-manager",
                f"https://127.0.0.1:{p['kube-controller-manager']}/healthz",
                False,
            ),
            ("kube-scheduler", f"https://127.0.0.1:{p['kube-scheduler']}/healthz", False),
            ("kwok", f"http://127.0.0.1:{p['kwok']}/healthz", True),
        ]
        for name, url, verify in steps:
            t0 = time.monotonic()
            self._spawn(name)
            if url:
                self._wait_http(name, url, 60, verify)
            self.echo(f"    {name} ready on 127.0.0.1:{p[name]} ({time.monotonic() - t0:.1f}s)")

    def node_manifests(self) -> list[dict[str, Any]]:
        """The fake nodes kwok manages (its annotation), labelled like a kind node."""
        cfg = self.config
        nodes = []
        for i in range(cfg.nodes):
            name = f"kwok-{self.env}-{i}"
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            }
            if cfg.zones:
                labels["topology.kubernetes.io/zone"] = cfg.zones[i % len(cfg.zones)]
            resources = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.pods)}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                        "labels": labels,
                    },
                    "status": {"allocatable": resources, "capacity": resources},
                }
            )
        return nodes

    def stop(self, keep: bool = False) -> None:
        """End every component this object started, newest first, and remove its folder;
        `keep` leaves both."""
        if keep or not self.started:
            return
        for name in reversed(list(self.procs)):
            stop_process(self.procs[name])
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def save_logs(self, dest: Path) -> None:
        """Copy every component's log into a report folder, redacted."""
        if self.logs.is_dir():
            redact.copy_tree(self.logs, dest)


def stop_kept(repo: Repo, env: str) -> list[str]:
    """Stop a cluster left running (KEEP=1) from its pid files and remove its folder; the
    names of the components that were still running."""
    folder = cluster_dir(repo, env)
    running: dict[str, int] = {}
    for pidfile in sorted((folder / "pids").glob("*")) if (folder / "pids").is_dir() else []:
        try:
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(folder).encode() in cmdline:  # still ours, not a reused pid
            os.kill(pid, signal.SIGTERM)
            running[pidfile.name] = pid
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in running.values()):
        if time.monotonic() > deadline:
            for pid in running.values():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    shutil.rmtree(folder, ignore_errors=True)
    return sorted(running)
