"""The real node's NetworkPolicy engine: kube-router's network policy controller alone
(`--run-firewall`, no BGP router, no service proxy: the bridge CNI and kube-proxy stay), run as
a host process beside kube-proxy, with iptables chains and ipsets on this machine.

Why kube-router and not kube-network-policies (what kind's kindnetd embeds): the latter hands
the first packet of each connection to user space with nftables' `queue` expression, and this
kernel has no CONFIG_NFT_QUEUE, so its ruleset is refused (docs/real-node.md, "NetworkPolicy on
the real node"). kube-router's firewall is iptables (`-m set`, `-m physdev`, REJECT) and ipset,
which this kernel has (CONFIG_NETFILTER_XT_SET, CONFIG_IP_SET, iptables-nft through NFT_COMPAT).

Why a host process and not a pod: it needs the host's network namespace and root over its
netfilter tables; as a pod that is a privileged hostNetwork DaemonSet from an image built here,
which restricted Pod Security (and the node's taint) would have to make room for, and a pod
cannot be stopped after the kubelet in the order that restores the machine. As a host process
it starts after kube-proxy and stops before the kubelet, and `HostState` restores iptables and
destroys its ipsets.

Its identity: a client certificate of the user `kgops:kube-router`, bound by the ClusterRole
below to what the controller reads (pods, namespaces, nodes, NetworkPolicies) and the events it
records; nothing it can write but events.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kserve_gitops.node.config import Layout

USER = "kgops:kube-router"
TOOLS = ("iptables", "iptables-save", "iptables-restore", "ipset")  # what kube-router runs
ROLE = "kgops:kube-router"
# kube-router's own chains; present once its first sync wrote them.
CHAINS = ("KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT")
RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["", "events.k8s.io"],
        "resources": ["events"],
        "verbs": ["create", "patch", "update"],
    },
]


def rbac() -> list[dict]:
    """The ClusterRole and its binding to the user of kube-router's client certificate."""
    meta = {"name": ROLE, "labels": {"app.kubernetes.io/managed-by": "kgops"}}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
    ]


def apply_rbac(admin_kubeconfig: Path) -> None:
    """Create (or replace) the ClusterRole and binding as the cluster's admin."""
    api = client.RbacAuthorizationV1Api(
        config.new_client_from_config(config_file=str(admin_kubeconfig))
    )
    role, binding = rbac()
    for body, create, replace in (
        (role, api.create_cluster_role, api.replace_cluster_role),
        (binding, api.create_cluster_role_binding, api.replace_cluster_role_binding),
    ):
        try:
            create(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            replace(ROLE, body)


def free_port() -> int:
    """A port nothing listens on now (kube-router's health server binds every address; the
    cluster's own ten ports per slot are all taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def argv(binary: Path, layout: Layout, kubeconfig: Path, health_port: int) -> list[str]:
    return [
        str(binary),
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        "--enable-ipv6=false",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={layout.node_name}",
        f"--service-cluster-ip-range={layout.service_cidr}",
        f"--health-port={health_port}",
        "--metrics-port=0",
        "--v=1",
    ]


def chains_missing() -> str | None:
    """None once kube-router's chains are in the filter table (its first full sync ran)."""
    missing = [
        chain
        for chain in CHAINS
        if subprocess.run(
            ["iptables", "-w", "5", "-t", "filter", "-S", chain], capture_output=True, check=False
        ).returncode
        != 0
    ]
    return f"no iptables chain {', '.join(missing)} yet" if missing else None
