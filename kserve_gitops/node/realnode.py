"""A real node joined to the local cluster's control plane: containerd (with runc and the CNI
plugins), the kubelet and kube-proxy as host processes, the way Kubernetes'
hack/local-up-cluster.sh runs them on a machine without systemd or Docker.

Start: the machine's settings are recorded (kserve_gitops.node.host), the bridge and the
kubelet's cgroup made, containerd started and the locally built images imported (never
pulled), then the kubelet (it registers the node, tainted so that only pods placed there on
purpose land on it), kube-proxy (Services as iptables rules) and kube-router's firewall
(NetworkPolicies as iptables rules and ipsets, kserve_gitops.node.netpol).
Stop, in the order that leaves nothing behind: the node's pods deleted through the API (their
sandboxes and veths go with them), kube-router, kube-proxy and the kubelet stopped, any
container left killed through containerd, containerd stopped, every mount under the node's
folders unmounted, its cgroups removed, and every kernel setting, iptables table and link it changed
restored. A node kept running (KEEP=1) is stopped from its folders (kserve_gitops.node.kept).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kserve_gitops.base.process import Process, ProcessError
from kserve_gitops.base.wait import wait_until
from kserve_gitops.localcluster import pki
from kserve_gitops.node import config as node_config
from kserve_gitops.node import host, images, netpol
from kserve_gitops.node.config import Layout
from kserve_gitops.node.kept import HOST_STATE, KEPT, kill_naming

# The kernel settings the node needs: routing between the bridge and the host, and bridged
# traffic through iptables (a pod answering a pod on the same bridge through a Service).
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}


# One real node per machine: kubelets and kube-proxies share iptables chain names and kernel
# settings, and each node restores what the machine was before it started.
LOCK = Path("/run/kgops-real-node.lock")


class NodeError(Exception):
    """The real node could not start or stop cleanly; says what and why."""


def kubeconfig(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kgops",
                    "cluster": {"server": server, "certificate-authority-data": b64(ca)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
                }
            ],
            "contexts": [{"name": "kgops", "context": {"cluster": "kgops", "user": user}}],
            "current-context": "kgops",
        }
    )


def _link(target: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / (name or target.name)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return link


@dataclass
class RealNode:
    """One real node of the cluster whose API server is `server` (CA `ca`, admin kubeconfig
    `admin_kubeconfig`), with the binaries of kserve_gitops.node.binaries in `bins` and the
    image archives to import in `images` (the pause image's reference `pause_image`)."""

    layout: Layout
    server: str
    ca: pki.CA
    admin_kubeconfig: Path
    bins: dict[str, Path]
    images: list[Path]
    pause_image: str
    echo: Callable[[str], None] = print
    state: host.HostState | None = None
    procs: dict[str, Process] = field(default_factory=dict)
    undone: list[str] = field(default_factory=list)
    lock_wait_s: float = 1200
    _lock: IO[str] | None = None

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        if not host.is_root():
            raise NodeError(
                "the real node needs root: it runs containerd and the kubelet, makes a bridge, "
                "iptables rules and cgroups (run as root; nothing was changed)"
            )
        missing = [tool for tool in netpol.TOOLS if shutil.which(tool) is None]
        if missing:
            raise NodeError(
                f"{', '.join(missing)}: not on PATH; the node's NetworkPolicy firewall "
                "(kube-router) needs them: `make node-tools` installs them (nothing was changed)"
            )
        lay = self.layout
        self._take_lock()
        self.state = host.HostState.capture()
        for folder in (lay.dir, lay.run):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.state.save(lay.dir / HOST_STATE)
        self._bridge()
        for key, value in SYSCTLS.items():
            (host.SYSCTL_ROOT / key).write_text(value)
        host.make_cgroup(lay.cgroup)
        self._write_files()
        env = {**os.environ, "PATH": f"{lay.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        # A pull would leave the machine (no registry is reachable here): containerd gets a
        # proxy that refuses at once, so a missing image fails fast and locally.
        no_pull = {**env, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
        self._start(
            "containerd",
            [str(self.bins["containerd"]), "--config", str(lay.dir / "containerd.toml")],
            self._containerd_ready,
            no_pull,
        )
        self._import_images()
        self._start("kubelet", self._kubelet_argv(), self._healthz("kubelet-healthz"), env, 120)
        self._start(
            "kube-proxy",
            [str(self.bins["kube-proxy"]), "--config", str(lay.dir / "kube-proxy.yaml")],
            self._healthz("kube-proxy-healthz"),
            env,
        )
        netpol.apply_rbac(self.admin_kubeconfig)
        health = netpol.free_port()
        self._start(
            "kube-router",
            netpol.argv(self.bins["kube-router"], lay, lay.dir / "kube-router.kubeconfig", health),
            self._all(self._healthz(health), netpol.chains_missing),
            env,
        )

    @staticmethod
    def _all(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
        return lambda: next((w for w in (c() for c in checks) if w), None)

    def _take_lock(self) -> None:
        """One real node per machine: wait up to `lock_wait_s` for another to stop."""
        lock = self._lock = LOCK.open("a+")
        holder = ""

        def taken() -> bool:
            nonlocal holder
            if KEPT.is_file():
                raise NodeError(
                    f"a real node is kept running on this machine ({KEPT.read_text().strip()}): "
                    "stop it first with `kgops cluster stop <env>` (one node at a time)"
                )
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                lock.seek(0)
                said, holder = holder, lock.read().strip() or "another run"
                if not said:
                    self.echo(f"    waiting for the real node of {holder} to stop ({LOCK})")
                return False

        try:
            wait_until(
                taken,
                self.lock_wait_s,
                2,
                lambda: (
                    f"the real node of {holder} to stop ({LOCK}): one at a time, since "
                    "nodes share iptables chains and kernel settings"
                ),
                NodeError,
            )
        except NodeError:
            lock.close()
            self._lock = None
            raise
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}, cluster {self.layout.env}\n")
        lock.flush()

    def _bridge(self) -> None:
        lay = self.layout
        prefix = lay.pod_cidr.split("/")[1]
        for argv in (
            ["ip", "link", "add", lay.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{lay.node_ip}/{prefix}", "dev", lay.bridge],
            ["ip", "link", "set", lay.bridge, "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise NodeError(f"`{' '.join(argv)}`: {proc.stderr.strip()}")

    def _write_files(self) -> None:
        lay = self.layout
        p = lay.pki
        pki.write(p / "ca.crt", self.ca.cert_pem)
        cert, key = self.ca.issue(lay.node_name, dns=(lay.node_name,), ips=(lay.node_ip,))
        pki.write(p / "kubelet.crt", cert)
        pki.write(p / "kubelet.key", key)
        for name, user, org in (
            ("kubelet", f"system:node:{lay.node_name}", "system:nodes"),
            ("kube-proxy", "system:kube-proxy", None),
            ("kube-router", netpol.USER, None),
        ):
            cert, key = self.ca.issue(user, org=org, client=True)
            text = kubeconfig(self.server, self.ca.cert_pem, cert, key, user)
            pki.write(lay.dir / f"{name}.kubeconfig", text.encode())
        for name in ("containerd-shim-runc-v2", "runc", "ctr"):
            _link(self.bins[name], lay.bin)
        for name in ("bridge", "host-local", "loopback", "portmap"):
            _link(self.bins[name], lay.cni_bin)
        lay.cni_conf.mkdir(parents=True, exist_ok=True)
        (lay.cni_conf / "10-kgops.conflist").write_text(node_config.cni_conflist(lay))
        (lay.dir / "containerd.toml").write_text(
            node_config.containerd_config(lay, self.pause_image, self.bins["runc"])
        )
        (lay.dir / "kubelet.yaml").write_text(node_config.kubelet_config(lay))
        (lay.dir / "kube-proxy.yaml").write_text(
            node_config.kube_proxy_config(lay, lay.dir / "kube-proxy.kubeconfig")
        )
        for folder in ("manifests", "volume-plugins", "pod-logs", "volumes"):
            (lay.dir / folder).mkdir(parents=True, exist_ok=True)

    def _kubelet_argv(self) -> list[str]:
        lay = self.layout
        return [
            str(self.bins["kubelet"]),
            "--config",
            str(lay.dir / "kubelet.yaml"),
            "--kubeconfig",
            str(lay.dir / "kubelet.kubeconfig"),
            "--root-dir",
            str(lay.kubelet_root),
            "--hostname-override",
            lay.node_name,
            "--node-ip",
            lay.node_ip,
            "--node-labels",
            f"{node_config.NODE_LABEL}={node_config.NODE_VALUE},type=real",
        ]

    def _start(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], str | None],
        env: dict[str, str],
        timeout_s: float = 60,
    ) -> None:
        t0 = time.monotonic()
        proc = Process(name, argv, self.layout.dir / "logs" / f"{name}.log", ready, env, timeout_s)
        self.procs[name] = proc
        try:
            proc.start()
        except ProcessError as exc:
            raise NodeError(str(exc)) from exc
        pids = self.layout.dir / "pids"
        pids.mkdir(exist_ok=True)
        (pids / name).write_text(str(proc.pid))
        self.echo(f"    {name} ready (pid {proc.pid}, {time.monotonic() - t0:.1f}s)")

    def restart(self, name: str) -> float:
        """Stop one of the node's processes (SIGTERM, as `systemctl restart` would) and start
        it again: seconds until it passed its readiness check again."""
        proc = self.procs[name]
        t0 = time.monotonic()
        try:
            proc.restart()
        except ProcessError as exc:
            raise NodeError(str(exc)) from exc
        (self.layout.dir / "pids" / name).write_text(str(proc.pid))
        return time.monotonic() - t0

    def ctr(self, *args: str, timeout: float = 300) -> str:
        argv = [str(self.bins["ctr"]), "--address", str(self.layout.socket), "-n", "k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise NodeError(
                f"`ctr {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout

    def _containerd_ready(self) -> str | None:
        if not self.layout.socket.exists():
            return f"no socket {self.layout.socket} yet"
        try:
            self.ctr("version", timeout=10)
        except (NodeError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        return None

    def _healthz(self, port: str | int) -> Callable[[], str | None]:
        number = port if isinstance(port, int) else self.layout.ports[port]
        url = f"http://127.0.0.1:{number}/healthz"

        def check() -> str | None:
            try:
                with urllib.request.urlopen(url, timeout=3) as resp:
                    return None if resp.status == 200 else f"{url}: HTTP {resp.status}"
            except OSError as exc:
                return f"{url}: {exc}"

        return check

    def _import_images(self) -> None:
        t0 = time.monotonic()
        # Pinned: the kubelet's image GC spares them (none can be pulled again).
        refs = images.import_images(
            self.bins["ctr"],
            self.layout.socket,
            archives=self.images,
            labels={"io.cri-containerd.pinned": "pinned"},
        )
        self.echo(
            f"    {len(refs)} images imported ({time.monotonic() - t0:.1f}s): {', '.join(refs)}"
        )

    def keep(self) -> None:
        """Leave the node running (KEEP=1): the lock goes with this process, so a marker keeps
        the next node off the machine until `kgops cluster stop`."""
        KEPT.write_text(f"cluster {self.layout.env}, folder {self.layout.dir}\n")
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- stop ------------------------------------------------------------------------------------

    def _api(self) -> client.CoreV1Api:
        return client.CoreV1Api(
            config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        )

    def drain(self, timeout_s: float = 90) -> None:
        """Delete every pod bound to the node and wait until the kubelet removed them (their
        sandboxes and network go through CNI DEL that way)."""
        core = self._api()
        selector = f"spec.nodeName={self.layout.node_name}"
        try:
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                with contextlib.suppress(ApiException):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=5
                    )
        except (ApiException, OSError) as exc:
            self.undone.append(f"pods not drained through the API: {exc}")
            return

        def no_container() -> bool:
            try:
                return not self.ctr("containers", "list", "-q", timeout=10).split()
            except (NodeError, subprocess.TimeoutExpired):
                return True  # containerd does not answer: nothing to wait for

        # Not a failure: stop() kills what the kubelet left.
        with contextlib.suppress(TimeoutError):
            wait_until(no_container, timeout_s, 1, "the node's containers to be removed")

    def stop(self) -> list[str]:
        """Stop everything and restore the machine; the lines say what was undone."""
        if self.state is None:
            return []
        lay = self.layout
        if "kubelet" in self.procs and self.procs["kubelet"].state == "ready":
            with contextlib.suppress(ProcessError):
                self.drain()
        for name in ("kube-router", "kube-proxy", "kubelet"):
            if name in self.procs:
                self.procs[name].stop()
        if "containerd" in self.procs:
            self._kill_containers()
            self.procs["containerd"].stop()
        self._kill_shims()
        mounts = host.unmount_under(lay.kubelet_root, lay.run, lay.dir)
        if mounts:
            self.undone.append(f"unmounted {len(mounts)} mount(s) under the node's folders")
        self.undone += host.kill_cgroup(lay.cgroup)
        left = host.remove_cgroup(lay.cgroup)
        self.undone += [f"cgroup left: {line}" for line in left]
        self.undone += self.state.restore()
        shutil.rmtree(lay.run, ignore_errors=True)
        self.state = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        return self.undone

    def _kill_containers(self) -> None:
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            for task in self.ctr("tasks", "list", "-q", timeout=20).split():
                with contextlib.suppress(NodeError):
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=20)
                    self.ctr("tasks", "delete", "-f", task, timeout=20)

    def _kill_shims(self) -> None:
        self.undone += kill_naming(str(self.layout.run).encode())
