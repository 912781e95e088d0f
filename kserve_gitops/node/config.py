"""The real node's configuration files, from its layout alone (no process, no host change):
containerd's (version 3, containerd 2), the CNI network, the KubeletConfiguration and the
KubeProxyConfiguration. What had to be set on a root-without-CAP_SYS_RESOURCE, cgroup v1 host
is said beside each setting."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import yaml

# The taint that keeps every pod off the real node but the ones placed there on purpose, and
# the label they select it by.
NODE_LABEL = "kgops.dev/node"
NODE_VALUE = "real"
TAINT = {"key": NODE_LABEL, "value": NODE_VALUE, "effect": "NoSchedule"}
TOLERATION = {"key": NODE_LABEL, "operator": "Equal", "value": NODE_VALUE, "effect": "NoSchedule"}
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Layout:
    """Where a real node keeps everything, its addresses and ports."""

    env: str
    dir: Path  # <cluster dir>/node: configs, kubelet root, containerd root, logs
    run: Path  # /run/kgops-<env>: sockets and containerd state (short paths for unix sockets)
    pod_cidr: str  # the CNI bridge's range; its first address is the node's
    service_cidr: str
    bridge: str
    ports: dict[str, int]
    cgroup: str  # kubelet cgroupRoot, in every hierarchy

    @property
    def node_name(self) -> str:
        return f"real-{self.env}"

    @property
    def node_ip(self) -> str:
        """The bridge's address: a host address the pods route to (the API server and the
        kubelet are reached there) that exists only while the node does."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def dns_ip(self) -> str:
        """The cluster DNS Service's address: the tenth of the Service range, as kubeadm's."""
        return str(ipaddress.ip_network(self.service_cidr)[10])

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def bin(self) -> Path:
        """Links to runc and the shim, first on containerd's PATH."""
        return self.dir / "bin"

    @property
    def cni_bin(self) -> Path:
        return self.dir / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"


def containerd_config(layout: Layout, pause_image: str, runc: Path) -> str:
    d = layout.dir / "containerd"
    config: dict[str, Any] = {
        "version": 3,
        "root": str(d / "root"),
        "state": str(layout.run / "state"),
        "grpc": {"address": str(layout.socket)},
        "ttrpc": {"address": str(layout.socket) + ".ttrpc"},
        "metrics": {"address": ""},
        "plugins": {
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                # Images are imported from the harness's archives, never pulled.
                "pinned_images": {"sandbox": pause_image},
            },
            "io.containerd.cri.v1.runtime": {
                # Root here lacks CAP_SYS_RESOURCE: without this, runc cannot lower a
                # sandbox's oom_score_adj and every pod sandbox fails.
                "restrict_oom_score_adj": True,
                # The pods' network namespaces under the state folder, not /var/run/netns.
                "netns_mounts_under_state_dir": True,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"BinaryName": str(runc), "SystemdCgroup": False},
                        }
                    },
                },
                "cni": {"bin_dirs": [str(layout.cni_bin)], "conf_dir": str(layout.cni_conf)},
            },
            "io.containerd.grpc.v1.cri": {
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
            },
        },
    }
    return tomli_w.dumps(config)


def cni_conflist(layout: Layout) -> str:
    """hack/local-up-cluster.sh's network: one bridge, host-local addresses, masquerade of
    traffic leaving the range, hairpin (a pod reaching itself through its Service), portmap."""
    net = ipaddress.ip_network(layout.pod_cidr)
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": f"kgops-{layout.env}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": layout.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(net), "gateway": layout.node_ip}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(layout.dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(layout: Layout) -> str:
    p = layout.pki
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": layout.ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.ports["kubelet-healthz"],
        # The API server authenticates with its client certificate (x509); every other caller
        # is checked by the API server (webhook).
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(p / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(p / "kubelet.crt"),
        "tlsPrivateKeyFile": str(p / "kubelet.key"),
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        # This host has cgroup v1 only (plus an empty cgroup2 mount) and no systemd.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": True,
        "cgroupRoot": f"/{layout.cgroup}",
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        # Never evict or collect images for disk or memory: the machine is shared and the
        # images are imported, not pullable again ("0%": a bare 0 is refused).
        "evictionHard": {
            "memory.available": "0%",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "clusterDNS": [layout.dns_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "podCIDR": layout.pod_cidr,
        "staticPodPath": str(layout.dir / "manifests"),
        "volumePluginDir": str(layout.dir / "volume-plugins"),
        "podLogsDir": str(layout.dir / "pod-logs"),
        "registerWithTaints": [TAINT],
        "serializeImagePulls": False,
        "maxPods": 110,
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(layout: Layout, kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": layout.pod_cidr,
        "hostnameOverride": layout.node_name,
        "bindAddress": layout.node_ip,
        "healthzBindAddress": f"127.0.0.1:{layout.ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{layout.ports['kube-proxy-metrics']}",
        # Leave the machine's conntrack table size and timeouts alone (0: do not set).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # NodePorts on 127.0.0.1 would need net.ipv4.conf.all.route_localnet=1.
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": [f"{layout.node_ip}/32"],
    }
    return yaml.safe_dump(config, sort_keys=False)


def layout(
    env: str, cluster_dir: Path, slot: int, node_cidr: str, service_cidr: str, ports: dict[str, int]
) -> Layout:
    """The real node of cluster `env` (its folder, slot and ports): a /24 of `node_cidr` per
    slot, so that clusters side by side never share a range, a bridge or a cgroup."""
    pod_cidr = list(ipaddress.ip_network(node_cidr).subnets(new_prefix=24))[slot]
    return Layout(
        env=env,
        dir=cluster_dir / "node",
        run=Path("/run") / f"kgops-{env}",
        pod_cidr=str(pod_cidr),
        service_cidr=service_cidr,
        bridge=f"kgops{slot}",
        ports=ports,
        cgroup=f"kgops-{env}",
    )
