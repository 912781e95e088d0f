"""What the kubelet would give the container of a kwok pod, given instead to the controller
process that stands in for it (processes.py), so that the process runs as that container would:
its environment, the ServiceAccount volume at the kubelet's path, an API identity of its
ServiceAccount, and its readinessProbe, asked as a kubelet asks.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from kserve_gitops.controllers.network import Netns
from kserve_gitops.localcluster import pki

# The ServiceAccount volume at the path the kubelet uses, in a mount namespace of the process's
# own (a tmpfs over /run hides nothing the process needs; /var/run is /run). Then: <folder>
# <binary> <args...>.
SA_PATH = "/run/secrets/kubernetes.io/serviceaccount"
SA_MOUNT = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    f'mount -t tmpfs kgops /run && mkdir -p {SA_PATH} && mount --bind "$0" {SA_PATH} && exec "$@"',
)


def resolve_env(
    container: Mapping[str, Any], pod: Mapping[str, Any], core: client.CoreV1Api
) -> dict[str, str]:
    """The container's environment as the kubelet builds it for `pod` (a kwok pod of the same
    Deployment): values, downward-API fields, ConfigMap and Secret keys, envFrom."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = core.read_namespaced_config_map(source["configMapRef"]["name"], ns).data or {}
            out |= {prefix + k: v for k, v in data.items()}
        elif "secretRef" in source:
            data = core.read_namespaced_secret(source["secretRef"]["name"], ns).data or {}
            out |= {prefix + k: base64.b64decode(v).decode() for k, v in data.items()}
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": ns,
        "status.podIP": (pod.get("status") or {}).get("podIP", ""),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName", ""),
    }
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom") or {}
        if "value" in var or not source:
            out[name] = str(var.get("value", ""))
        elif "fieldRef" in source:
            out[name] = fields.get(source["fieldRef"]["fieldPath"], "")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            out[name] = (core.read_namespaced_config_map(ref["name"], ns).data or {}).get(
                ref["key"], ""
            )
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            raw = (core.read_namespaced_secret(ref["name"], ns).data or {}).get(ref["key"], "")
            out[name] = base64.b64decode(raw).decode()
    return out


def service_account_volume(
    core: client.CoreV1Api, ca: pki.CA, ns: str, sa: str, folder: Path
) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: the
    namespace (controller-runtime reads it to find its leader election namespace), the
    cluster CA and a token the API server issues for the ServiceAccount (TokenRequest)."""
    dest = folder / "serviceaccount"
    dest.mkdir(parents=True, exist_ok=True)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600 * 6)
    )
    token = core.create_namespaced_service_account_token(sa, ns, request)
    (dest / "namespace").write_text(ns)
    (dest / "ca.crt").write_bytes(ca.cert_pem)
    (dest / "token").write_text(token.status.token)
    return dest


def identity(ca: pki.CA, api_port: int, ns: str, sa: str, folder: Path) -> Path:
    """A kubeconfig that authenticates as the pod's ServiceAccount."""
    crt, key = ca.issue(
        f"system:serviceaccount:{ns}:{sa}", org="system:serviceaccounts", client=True
    )
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kgops",
                "cluster": {
                    "server": f"https://127.0.0.1:{api_port}",
                    "certificate-authority-data": b64(ca.cert_pem),
                },
            }
        ],
        "users": [
            {
                "name": sa,
                "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "kgops", "context": {"cluster": "kgops", "user": sa}}],
        "current-context": "kgops",
    }
    return pki.write(folder / "kubeconfig", yaml.safe_dump(kubeconfig).encode())


def probe(netns: Netns, spec: Mapping[str, Any], ports: Mapping[str, int], kube: str) -> bool:
    """One readinessProbe (httpGet or tcpSocket) inside the process's namespace, sent as the
    kubelet of Kubernetes `kube` sends it (User-Agent kube-probe/<major.minor>, which Knative's
    servers recognise as a probe)."""
    if "httpGet" in spec:
        get = spec["httpGet"]
        port = ports.get(str(get["port"]), get["port"])
        try:
            sock = netns.dial(int(port))()
            if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
                # A kubelet does not verify; no certificate yet fails the handshake (not ready).
                sock = ssl._create_unverified_context().wrap_socket(sock)
        except OSError:
            return False
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=3)
        conn.sock = sock
        minor = ".".join(kube.split(".")[:2])
        headers = {"User-Agent": f"kube-probe/{minor}"}
        headers |= {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
        try:
            conn.request("GET", get.get("path", "/"), headers=headers)
            return 200 <= conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
    if "tcpSocket" in spec:
        port = ports.get(str(spec["tcpSocket"]["port"]), spec["tcpSocket"]["port"])
        try:
            netns.dial(int(port))().close()
            return True
        except OSError:
            return False
    return True  # no probe: running is ready, as for the kubelet
