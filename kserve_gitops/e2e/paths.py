"""The ways into a model served by a real pod (the real-node provider), each measured on its
own: the revision's private Service (kube-proxy's rules, then queue-proxy), `kubectl
port-forward` to the predictor pod (the API server and the kubelet in the path, the report's
path), Knative's activator Service with the revision's headers while the revision has a pod (the
activator, then queue-proxy), and, from zero replicas, the revision's public Service whose
endpoints are then Knative's activator.

While the port-forward path is used, a keep-alive of one request a second goes through the
Service path: traffic that bypasses queue-proxy is invisible to Knative's autoscaler, which
would otherwise scale the revision to zero under the test (dev declares minReplicas 0). The run
says so when it starts it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kserve_gitops.base.process import Process, ProcessError
from kserve_gitops.base.tools import Runner, find_tool
from kserve_gitops.base.wait import wait_until
from kserve_gitops.serving import client

# Headers the ingress sets for Knative's activator: which revision a request is for.
REVISION_HEADER = "Knative-Serving-Revision"
NAMESPACE_HEADER = "Knative-Serving-Namespace"
MODEL_PORT = 8080  # the model server's port in the predictor pod (KServe's default)
# Knative's activator Service: always the activator, whichever endpoints the revision's public
# Service has (Knative takes the activator out of that path once the burst capacity allows).
ACTIVATOR = ("activator-service", "knative-serving")


class PathError(Exception):
    """A cluster path that could not be opened or did not answer; says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    """The object's status condition `kind` is True."""
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The kubelet's readiness probe passed (the pod's Ready condition)."""
    return condition_true(pod, "Ready")


def _reachable(port: int) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return None
        except OSError as exc:
            return f"127.0.0.1:{port}: {exc}"

    return check


@dataclass
class ClusterPaths:
    runner: Runner
    report_dir: Path
    echo: Callable[[str], None]
    targets: dict[str, str] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # per path, when it needs any
    forward: Process | None = None
    measures: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _trickle: threading.Thread | None = None

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        out = self.runner.run(["kubectl", "get", *args, "-o", "json"], timeout=60, quiet=True)
        return json.loads(out)

    def revision(self, model: str, namespace: str) -> str:
        """The newest Ready revision of the model's predictor."""
        ksvc = self.get("ksvc", f"{model}-predictor", "-n", namespace)
        name = (ksvc.get("status") or {}).get("latestReadyRevisionName")
        if not name:
            raise PathError(f"Knative Service {namespace}/{model}-predictor has no ready revision")
        return str(name)

    def _service_url(self, name: str, namespace: str) -> str:
        svc = self.get("service", name, "-n", namespace)
        ip = svc["spec"].get("clusterIP")
        port = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == "http")
        return f"http://{ip}:{port}"

    def ready_pods(self, namespace: str, rev: str) -> list[str]:
        """The revision's Ready pods that are not being deleted: a pod the autoscaler is
        scaling away stays Ready until its containers stop."""
        pods = self.get("pods", "-n", namespace, "-l", f"serving.knative.dev/revision={rev}")
        return [
            p["metadata"]["name"]
            for p in pods["items"]
            if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
        ]

    def public(self, model: str, namespace: str) -> tuple[str, dict[str, str]]:
        """The newest Ready revision's public Service and the headers the ingress sets."""
        return self.revision_target(self.revision(model, namespace), namespace)

    def revision_target(self, rev: str, namespace: str) -> tuple[str, dict[str, str]]:
        """A revision's public Service (its endpoints the activator's, or the pods' when Knative
        takes the activator out of the path) and the headers the ingress sets for it."""
        headers = {REVISION_HEADER: rev, NAMESPACE_HEADER: namespace}
        return self._service_url(rev, namespace), headers

    def _through_activator(
        self, model: str, namespace: str, rev: str, rows: client.Rows, timeout_s: float
    ) -> tuple[list[Any], float]:
        """One prediction to the revision's public Service with the headers the ingress sets
        for the activator: (predictions, seconds to the answer)."""
        url = self._service_url(rev, namespace)
        headers: Mapping[str, str] = {REVISION_HEADER: rev, NAMESPACE_HEADER: namespace}
        with httpx.Client(timeout=timeout_s, headers=dict(headers)) as http:
            started = time.monotonic()
            got = client.predict(url, model, rows, "v1", client=http, timeout=timeout_s)
            return got, time.monotonic() - started

    def open(self, model: str, namespace: str, path: str) -> str:
        rev = self.revision(model, namespace)
        if not self.ready_pods(namespace, rev):  # scaled to zero: the activator wakes it
            self._through_activator(model, namespace, rev, ((5.1, 3.5, 1.4, 0.2),), 300)
            # The answer may come from a pod on its way out (scaling to zero when the request
            # came): the path needs the pod the request made the autoscaler start.
            self.wait_for_ready(namespace, rev, 300)
            self.echo(f"    revision {rev} woken from zero through the activator")
        if path == "service":
            url = self._service_url(f"{rev}-private", namespace)
        elif path == "activator":
            url = self._service_url(*ACTIVATOR)
            self.headers[path] = {REVISION_HEADER: rev, NAMESPACE_HEADER: namespace}
        elif path == "port-forward":
            url = self._port_forward(model, namespace, rev)
            self._keep_alive(model, namespace)
        else:
            raise PathError(f"unknown cluster path {path!r}")
        self.targets[path] = url
        self.echo(f"    {path}: {url} (revision {rev})")
        return url

    def _port_forward(self, model: str, namespace: str, rev: str) -> str:
        ready = self.ready_pods(namespace, rev)
        if not ready:
            raise PathError(f"revision {namespace}/{rev} has no Ready pod to forward to")
        port = free_port()
        argv = [
            "kubectl",
            "port-forward",
            "-n",
            namespace,
            f"pod/{ready[0]}",
            f"{port}:{MODEL_PORT}",
        ]
        env = self.runner.env
        self.forward = Process(
            "kubectl port-forward",
            [find_tool("kubectl", (env or {}).get("PATH")) or "kubectl", *argv[1:]],
            self.report_dir / "port-forward.log",
            _reachable(port),
            env,
            start_timeout_s=30,
        )
        try:
            self.forward.start()
        except ProcessError as exc:
            raise PathError(str(exc)) from exc
        return f"http://127.0.0.1:{port}"

    def _keep_alive(self, model: str, namespace: str) -> None:
        service = self.targets.get("service")
        if service is None or self._trickle is not None:
            return
        self.echo(
            "    keep-alive: 1 request/s through the service path while port-forward is used "
            "(traffic past queue-proxy is invisible to Knative's autoscaler)"
        )
        rows = ((5.1, 3.5, 1.4, 0.2),)

        def trickle() -> None:
            # The step under test reports what matters; this only keeps the revision up.
            while not self._stop.wait(1.0):
                with contextlib.suppress(client.PredictionError, httpx.HTTPError):
                    client.predict(service, model, rows, "v1", timeout=5.0)

        self._trickle = threading.Thread(target=trickle, name="kgops-keep-alive", daemon=True)
        self._trickle.start()

    def target(self, path: str) -> str:
        if path not in self.targets:
            raise PathError(f"cluster path {path} was not opened")
        if path == "port-forward" and self.forward is not None:
            self.forward.check_alive()
        return self.targets[path]

    def cold_start(
        self, model: str, namespace: str, rows: client.Rows, timeout_s: float
    ) -> tuple[list[Any], float]:
        """Wait for zero pods, then one prediction through the activator: (predictions, seconds
        from the request to the answer)."""
        self.close()
        rev = self.revision(model, namespace)
        waited = self.wait_for_zero(namespace, rev, timeout_s)
        self.echo(f"    scaled to zero after {waited:.0f}s without traffic")
        self.measures["cold_start_requested"] = time.time()  # wall clock, as pods' timestamps
        got, took = self._through_activator(model, namespace, rev, rows, timeout_s)
        self.measures["cold_start_s"] = round(took, 3)
        self.echo(f"    activator: first answer {took:.2f}s after the request")
        # The activator probes the new pod itself and may answer before the kubelet's
        # readiness probe marks it Ready; the next steps read the Deployment's state.
        self.wait_for_ready(namespace, rev, timeout_s)
        return got, took

    def wait_for_zero(self, namespace: str, rev: str, timeout_s: float) -> float:
        """Seconds until the revision has no pod left (terminating ones included)."""
        selector = f"serving.knative.dev/revision={rev}"
        t0 = time.monotonic()
        wait_until(
            lambda: not self.get("pods", "-n", namespace, "-l", selector)["items"],
            timeout_s,
            1,
            f"revision {namespace}/{rev} to scale to zero (the environment's scale-to-zero "
            "settings)",
            PathError,
        )
        return time.monotonic() - t0

    def wait_for_ready(self, namespace: str, rev: str, timeout_s: float) -> list[str]:
        """The revision's Ready pods, once there is one (the kubelet's readiness probe)."""
        return wait_until(
            lambda: self.ready_pods(namespace, rev),
            timeout_s,
            1,
            f"a Ready pod of revision {namespace}/{rev}",
            PathError,
        )

    def close(self) -> None:
        self._stop.set()
        if self._trickle is not None:
            self._trickle.join(timeout=10)
            self._trickle = None
        self._stop = threading.Event()
        if self.forward is not None:
            self.forward.stop()
            self.forward = None
            self.targets.pop("port-forward", None)
