"""The controllers as processes in place of their kwok pods.

Each process stands in for one Deployment the charts or the Knative operator declare (the
Deployment stays, its pods are kwok's): it gets that container's args and environment (values,
and the fields a kubelet fills in: pod name, namespace, IP, from the kwok pod), the API
identity of the pod's ServiceAccount (a client certificate for system:serviceaccount:<ns>:<sa>,
so RBAC is the one the charts declare; kubelet.py), the Secrets mounted under /tmp written
beneath its TMPDIR (KServe's webhook certificate), and a network namespace of its own
(network.py) whose ports the kwok pod's IP forwards to. It is ready when the container's
readinessProbe passes, asked inside that namespace as a kubelet would.

Once ready, every admission webhook whose Service selects the pod and whose path the process
answers (anything but 404; webhooks.py) is handed back from the stand-ins (`StandIns.serve`), so
the API server calls it with the failurePolicy its configuration declares.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kserve_gitops.base.process import tail
from kserve_gitops.base.tools import stop_process
from kserve_gitops.controllers import binaries, kubelet, webhooks
from kserve_gitops.controllers.network import Netns, NetworkError, PodForwarder
from kserve_gitops.localcluster import pki
from kserve_gitops.localcluster.standins import StandIns
from kserve_gitops.repo import Repo


class ControllerError(Exception):
    """A controller that could not start or become ready; names it, the reason and its log."""


@dataclass(frozen=True)
class Role:
    """The Deployment/container a binary stands in for, and the group that starts together."""

    binary: str
    namespace: str
    deployment: str
    container: str
    group: str


ROLES = (
    Role(
        "knative-operator",
        "knative-operator",
        "knative-operator",
        "knative-operator",
        "knative-operator",
    ),
    Role(
        "knative-operator-webhook",
        "knative-operator",
        "operator-webhook",
        "operator-webhook",
        "knative-operator",
    ),
    Role(
        "knative-serving-controller",
        "knative-serving",
        "controller",
        "controller",
        "knative-serving",
    ),
    Role("knative-serving-webhook", "knative-serving", "webhook", "webhook", "knative-serving"),
    Role(
        "knative-serving-autoscaler",
        "knative-serving",
        "autoscaler",
        "autoscaler",
        "knative-serving",
    ),
    Role("kserve-manager", "kserve", "kserve-controller-manager", "manager", "kserve"),
)
GROUPS = tuple(dict.fromkeys(r.group for r in ROLES))


@dataclass
class Running:
    role: Role
    proc: subprocess.Popen[bytes]
    netns: Netns
    ports: dict[str, int]  # container port name (or number) -> number
    selector: dict[str, str]
    log: Path
    ready_s: float = 0.0


@dataclass
class Controllers:
    """The controller processes of one environment's kwok cluster (of the checkout `repo`,
    whose pins choose the binaries)."""

    repo: Repo
    env: str
    dir: Path  # the cluster's folder (.cache/e2e/<env>)
    kubeconfig: Path
    api_port: int
    ca: pki.CA
    stand_ins: StandIns | None
    echo: Callable[[str], None] = print
    running: dict[str, Running] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    interval: float = 1.0

    def __post_init__(self) -> None:
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.api = api
        self.bins: dict[str, Path] = {}
        self.forwarder = PodForwarder()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logs = self.dir / "logs"

    # -- start -----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The binaries, built where missing; the operator's data folder (KO_DATA_PATH)."""
        self.bins = binaries.ensure(self.repo, self.echo)
        versions = self.repo.versions
        self.kodata = binaries.kodata(
            self.repo,
            str(versions["localCluster"]["knativeOperator"]),
            str(versions["knative"]["serving"]),
        )

    def _wait(self, what: str, timeout_s: float, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise ControllerError(f"{what}: not there after {timeout_s:g}s")
            time.sleep(1)

    def _deployment(self, role: Role) -> dict[str, Any] | None:
        try:
            dep = self.apps.read_namespaced_deployment(role.deployment, role.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(dep)

    def _pods(self, selector: Mapping[str, str], ns: str) -> list[dict[str, Any]]:
        label = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = self.core.list_namespaced_pod(ns, label_selector=label).items
        return [self.api.sanitize_for_serialization(p) for p in pods]

    def _pod_ips(self, selector: Mapping[str, str], role: Role) -> list[dict[str, Any]]:
        """The Deployment's pods that have an IP (kwok assigned one)."""
        return [
            p for p in self._pods(selector, role.namespace) if (p.get("status") or {}).get("podIP")
        ]

    def _mounted_secrets(
        self, spec: Mapping[str, Any], container: Mapping[str, Any], ns: str, tmpdir: Path
    ) -> None:
        """Secret volumes the container mounts under /tmp, written beneath TMPDIR (Go's
        os.TempDir), where the process looks for them (KServe's webhook certificate)."""
        secrets = {
            v["name"]: v["secret"]["secretName"]
            for v in spec.get("volumes") or []
            if v.get("secret")
        }
        for mount in container.get("volumeMounts") or []:
            name, path = secrets.get(mount["name"]), mount["mountPath"]
            if not name or not path.startswith("/tmp/"):
                continue
            secret = self._wait(
                f"Secret {ns}/{name} (mounted at {path})", 120, lambda n=name: self._secret(ns, n)
            )
            folder = tmpdir / path.removeprefix("/tmp/")
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in (secret.data or {}).items():
                (folder / key).write_bytes(base64.b64decode(value))

    def _secret(self, ns: str, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def start(self, group: str, timeout_s: float = 180) -> list[str]:
        """Start the processes of `group` once their Deployments and pods exist; wait until each
        is ready. Lines saying what runs where."""
        if group not in GROUPS:
            raise ControllerError(f"unknown controller group {group!r} (one of {GROUPS})")
        lines: list[str] = []
        roles = [r for r in ROLES if r.group == group]
        for role in roles:
            t0 = time.monotonic()
            dep = self._wait(
                f"Deployment {role.namespace}/{role.deployment}",
                timeout_s,
                lambda r=role: self._deployment(r),
            )
            spec = dep["spec"]["template"]["spec"]
            selector = dep["spec"]["selector"].get("matchLabels") or {}
            what = f"a pod of Deployment {role.namespace}/{role.deployment}"
            pods = self._wait(what, timeout_s, lambda s=selector, r=role: self._pod_ips(s, r))
            container = next((c for c in spec["containers"] if c["name"] == role.container), None)
            if container is None:
                raise ControllerError(
                    f"Deployment {role.namespace}/{role.deployment}: no container "
                    f"{role.container!r} (has {[c['name'] for c in spec['containers']]})"
                )
            self._spawn(role, spec, container, selector, pods[0])
            lines.append(self._await_ready(role, container, timeout_s, t0))
        self.sync()
        return lines

    def _spawn(
        self,
        role: Role,
        spec: Mapping[str, Any],
        container: Mapping[str, Any],
        selector: dict[str, str],
        pod: Mapping[str, Any],
    ) -> None:
        folder = self.dir / "controllers" / role.binary
        shutil.rmtree(folder, ignore_errors=True)
        tmpdir = folder / "tmp"
        tmpdir.mkdir(parents=True)
        sa = spec.get("serviceAccountName") or "default"
        kubeconfig = kubelet.identity(self.ca, self.api_port, role.namespace, sa, folder)
        self._mounted_secrets(spec, container, role.namespace, tmpdir)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(folder),
            **kubelet.resolve_env(container, pod, self.core),
            "KUBECONFIG": str(kubeconfig),
            "TMPDIR": str(tmpdir),
            "KO_DATA_PATH": str(self.kodata),
        }
        try:
            netns = Netns(f"kgops-{self.env}-{role.binary}"[:60])
            netns.bridge_out(self.api_port)
        except (NetworkError, OSError) as exc:
            raise ControllerError(f"{role.binary}: {exc}") from exc
        ports = {
            str(p.get("name") or p["containerPort"]): int(p["containerPort"])
            for p in container.get("ports") or []
        }
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{role.binary}.log"
        sa_dir = kubelet.service_account_volume(self.core, self.ca, role.namespace, sa, folder)
        argv = [
            *netns.exec_prefix(),
            *kubelet.SA_MOUNT,
            str(sa_dir),
            str(self.bins[role.binary]),
            *(container.get("args") or []),
            f"--kubeconfig={kubeconfig}",
        ]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        (self.dir / "pids").mkdir(exist_ok=True)
        (self.dir / "pids" / role.binary).write_text(str(proc.pid))
        with self._lock:  # the sync loop may be iterating over the running processes
            self.running[role.binary] = Running(role, proc, netns, ports, selector, log_path)

    def _await_ready(
        self, role: Role, container: Mapping[str, Any], timeout_s: float, t0: float
    ) -> str:
        run = self.running[role.binary]
        spec = container.get("readinessProbe") or {}
        deadline = time.monotonic() + timeout_s
        kube = self.repo.kubernetes_version
        while not kubelet.probe(run.netns, spec, run.ports, kube):
            if run.proc.poll() is not None:
                raise ControllerError(
                    f"{role.binary} exited with {run.proc.returncode} before it was ready; log "
                    f"{self.repo.rel(run.log)}:\n{tail(run.log)}"
                )
            if time.monotonic() > deadline:
                raise ControllerError(
                    f"{role.binary}: readinessProbe {json.dumps(spec)} not passing after "
                    f"{timeout_s:g}s; log {self.repo.rel(run.log)}:\n{tail(run.log)}"
                )
            time.sleep(0.5)
        run.ready_s = time.monotonic() - t0
        return (
            f"{role.binary} ready in {run.ready_s:.1f}s for Deployment "
            f"{role.namespace}/{role.deployment} (pid {run.proc.pid}, netns "
            f"{run.netns.name})"
        )

    # -- pod network and webhooks ----------------------------------------------------------------

    def sync(self) -> None:
        """Forward each kwok pod's ports to its process; hand served webhooks back."""
        with self._lock:
            wanted = []
            for run in self.running.values():
                if run.proc.poll() is not None:
                    if run.role.binary not in self.exited:
                        self.exited.append(run.role.binary)
                        self.echo(
                            f"    controller {run.role.binary} exited with "
                            f"{run.proc.returncode}: {tail(run.log, 3)}"
                        )
                    continue
                for pod in self._pods(run.selector, run.role.namespace):
                    ip = (pod.get("status") or {}).get("podIP")
                    if not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
                        continue
                    wanted += [
                        (ip, port, f"{run.role.binary}:{port}", run.netns.dial(port))
                        for port in set(run.ports.values())
                    ]
            self.forwarder.sync(wanted)
            self._serve_webhooks()

    def _backing(self, ns: str, service: str, port: int | None) -> tuple[Running, int] | None:
        """The running process whose pods a Service selects, and the container port it sends
        the webhook's port to."""
        try:
            svc = self.core.read_namespaced_service(service, ns)
        except ApiException:
            return None
        selector = svc.spec.selector or {}
        for run in self.running.values():
            if run.role.namespace != ns or run.proc.poll() is not None or not selector:
                continue
            pods = self._pods(selector, ns)
            if not any(
                all(
                    (p["metadata"].get("labels") or {}).get(k) == v for k, v in run.selector.items()
                )
                for p in pods
            ):
                continue
            for sp in svc.spec.ports or []:
                if sp.port == (port or 443):
                    target = sp.target_port if sp.target_port is not None else sp.port
                    number = run.ports.get(str(target), target)
                    return run, int(number)
        return None

    def _serve_webhooks(self) -> None:
        if self.stand_ins is None:
            return
        serve: list[str] = []
        adm = self.admission
        for kind, lister in (
            ("ValidatingWebhookConfiguration", adm.list_validating_webhook_configuration),
            ("MutatingWebhookConfiguration", adm.list_mutating_webhook_configuration),
        ):
            for cfg in lister().items:
                for hook in cfg.webhooks or []:
                    key = f"{kind}/{cfg.metadata.name}/{hook.name}"
                    svc = hook.client_config.service
                    if key in self.served or svc is None:
                        continue
                    backing = self._backing(svc.namespace, svc.name, svc.port)
                    if backing and webhooks.answers(backing[0].netns, backing[1], svc.path or "/"):
                        serve.append(key)
                        self.served.append(key)
        if serve:
            self.stand_ins.serve(serve)

    # -- loop and stop ---------------------------------------------------------------------------

    def start_loop(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(ApiException, OSError):
                    self.sync()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="kgops-controllers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End every process and its namespace, also for a kept cluster (KEEP=1): their bridge
        to the API server and the pod forwarding live in this process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.forwarder.close()  # first: no new connection into a namespace being removed
        for run in reversed(list(self.running.values())):
            stop_process(run.proc, 15)
            run.netns.close()

    def summary(self) -> dict[str, Any]:
        return {
            "processes": {
                name: {
                    "deployment": f"{r.role.namespace}/{r.role.deployment}",
                    "pid": r.proc.pid,
                    "exit_code": r.proc.poll(),
                    "ready_seconds": round(r.ready_s, 1),
                    "netns": r.netns.name,
                }
                for name, r in self.running.items()
            },
            "webhooks_served": self.served,
            "pod_forwards": self.forwarder.describe(),
            "forward_errors": self.forwarder.errors,
            "not_buildable": binaries.unavailable(self.repo),
        }
