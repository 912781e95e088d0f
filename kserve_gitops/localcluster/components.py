"""The command line of each control-plane component: which ports, certificates, folders and
address ranges etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run with,
read in one place, apart from starting them and waiting until they are ready (controlplane.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def client_args(name: str, ports: Mapping[str, int], kubeconfig: Path) -> list[str]:
    """A control-plane client's connection and serving flags (admin kubeconfig, its own
    loopback port, no leader election: one replica)."""
    k = str(kubeconfig)
    return [
        "--kubeconfig",
        k,
        "--authentication-kubeconfig",
        k,
        "--authorization-kubeconfig",
        k,
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        str(ports[name]),
        "--leader-elect=false",
    ]


def node_args(node_ip: str | None, pki: Path) -> list[str]:
    """The API server's flags for a real node: its pods reach the API server at the node's
    address (the `kubernetes` Service's endpoint); the kubelet is dialled at its
    InternalIP with the admin client certificate and checked against the cluster CA; the
    namespaces whose pods run there say so (PodNodeSelector, PodTolerationRestriction)."""
    if not node_ip:
        return ["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"]
    d = pki
    return [
        "--bind-address",
        "0.0.0.0",
        "--advertise-address",
        node_ip,
        "--kubelet-client-certificate",
        str(d / "admin.crt"),
        "--kubelet-client-key",
        str(d / "admin.key"),
        "--kubelet-certificate-authority",
        str(d / "ca.crt"),
        "--kubelet-preferred-address-types",
        "InternalIP",
    ]


def etcd(folder: Path, ports: Mapping[str, int]) -> list[str]:
    """One member on loopback, its data in `folder`/etcd."""
    p = ports
    return [
        "--name",
        "kgops",
        "--data-dir",
        str(folder / "etcd"),
        "--listen-client-urls",
        f"http://127.0.0.1:{p['etcd']}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{p['etcd']}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{p['etcd-peer']}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{p['etcd-peer']}",
        "--initial-cluster",
        f"kgops=http://127.0.0.1:{p['etcd-peer']}",
        "--listen-metrics-urls",
        "",
        # A throwaway cluster: durability is not worth the fsyncs on a shared disk.
        "--unsafe-no-fsync",
        "--quota-backend-bytes",
        str(2 * 2**30),
    ]


def kube_apiserver(
    ports: Mapping[str, int], pki: Path, service_cidr: str, node_ip: str | None
) -> list[str]:
    """Serving on loopback (and at the real node's address, `node_ip`) with the cluster CA."""
    p, d = ports, pki
    return [
        "--etcd-servers",
        f"http://127.0.0.1:{p['etcd']}",
        *node_args(node_ip, pki),
        "--secure-port",
        str(p["kube-apiserver"]),
        "--tls-cert-file",
        str(d / "apiserver.crt"),
        "--tls-private-key-file",
        str(d / "apiserver.key"),
        "--client-ca-file",
        str(d / "ca.crt"),
        "--service-account-issuer",
        "https://kubernetes.default.svc.cluster.local",
        "--service-account-key-file",
        str(d / "sa.pub"),
        "--service-account-signing-key-file",
        str(d / "sa.key"),
        "--service-cluster-ip-range",
        service_cidr,
        "--authorization-mode",
        "Node,RBAC",
        # PodSecurity, ServiceAccount, NamespaceLifecycle, ... are on by default;
        # named here so that the run says what admits a pod.
        "--enable-admission-plugins",
        "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota,"
        "DefaultStorageClass,MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
        + (",PodNodeSelector,PodTolerationRestriction" if node_ip else ""),
        # Webhook and aggregated API Services are called at their endpoints (pod
        # IPs routed to this machine), since no kube-proxy routes ClusterIPs here.
        "--enable-aggregator-routing=true",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def kube_controller_manager(
    ports: Mapping[str, int], pki: Path, kubeconfig: Path, service_cidr: str
) -> list[str]:
    """Every controller, signing with the cluster CA and the ServiceAccount key."""
    d = pki
    return [
        *client_args("kube-controller-manager", ports, kubeconfig),
        "--service-account-private-key-file",
        str(d / "sa.key"),
        "--root-ca-file",
        str(d / "ca.crt"),
        "--cluster-signing-cert-file",
        str(d / "ca.crt"),
        "--cluster-signing-key-file",
        str(d / "ca.key"),
        "--service-cluster-ip-range",
        service_cidr,
        "--controllers",
        "*",
    ]


def kwok(ports: Mapping[str, int], kubeconfig: Path, pod_cidr: str) -> list[str]:
    """Only the nodes of its annotation, their pods' addresses from `pod_cidr`."""
    p = ports
    return [
        "--kubeconfig",
        str(kubeconfig),
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector",
        f"{KWOK_NODE_ANNOTATION}=fake",
        "--cidr",
        pod_cidr,
        "--node-ip",
        "127.0.0.1",
        "--node-lease-duration-seconds",
        "40",
        "--server-address",
        f"127.0.0.1:{p['kwok']}",
    ]
