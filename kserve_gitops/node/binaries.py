"""The real node's binaries, built from Go modules at the versions of versions.yaml (`node:`
and kubernetes.version) into the cache of the control plane's binaries:

- kubelet and kube-proxy: the control plane's k8s.io/kubernetes build module;
- containerd, its runc shim and ctr: `go install` of github.com/containerd/containerd/v2's
  commands, without the btrfs/devmapper/zfs snapshotters (cgo-free, as the node needs only
  overlayfs);
- runc: `go install` with cgo and the seccomp tag (Debian's libseccomp-dev), because the
  RuntimeDefault seccomp profile that restricted Pod Security requires is enforced by runc;
- the CNI plugins bridge, host-local, loopback and portmap;
- CoreDNS, the cluster DNS the node's pods resolve Services with;
- kube-router, of which the node runs only the NetworkPolicy firewall (iptables and ipsets).

    kgops node-binaries          # build what is missing (make node-binaries)
    kgops node-binaries --list   # where each is
"""

from __future__ import annotations

import argparse

from kserve_gitops.localcluster.binaries import (
    NODE_COMMANDS,
    Binary,
    _kube_ldflags,
    build,
    pin_error,
)
from kserve_gitops.localcluster.buildcommand import build_command
from kserve_gitops.repo import Repo

CONTAINERD = "github.com/containerd/containerd/v2"
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
CONTAINERD_TAGS = ("no_btrfs", "no_devmapper", "no_zfs")
CNI = "github.com/containernetworking/plugins/plugins"
KUBE_ROUTER = "github.com/cloudnativelabs/kube-router/v2"
CNI_PLUGINS = {"bridge": "main", "loopback": "main", "portmap": "meta", "host-local": "ipam"}


def pins(repo: Repo, versions: dict | None = None) -> dict[str, str]:
    """versions.yaml `node:`, every key present."""
    node = (versions or repo.versions).get("node") or {}
    for key in ("containerd", "runc", "cniPlugins", "coredns", "kubeRouter"):
        if not node.get(key):
            raise pin_error(repo, f"node.{key}")
    return {k: str(v) for k, v in node.items()}


def pinned(repo: Repo, versions: dict | None = None) -> list[Binary]:
    versions = versions or repo.versions
    kube = str(versions["kubernetes"]["version"])
    pin = pins(repo, versions)
    containerd = pin["containerd"]
    return [
        *(
            Binary(
                cmd, f"v{kube}", f"k8s.io/kubernetes/cmd/{cmd}", "kubernetes", _kube_ldflags(kube)
            )
            for cmd in NODE_COMMANDS
        ),
        *(
            Binary(
                cmd,
                containerd,
                f"{CONTAINERD}/cmd/{cmd}",
                tags=CONTAINERD_TAGS,
                ldflags=(f"-X {CONTAINERD}/version.Version={containerd}",),
            )
            for cmd in CONTAINERD_COMMANDS
        ),
        Binary(
            "runc",
            pin["runc"],
            "github.com/opencontainers/runc",
            tags=("seccomp",),
            ldflags=(f"-X main.version={pin['runc'].lstrip('v')}",),
            cgo=True,
        ),
        *(
            Binary(
                name,
                pin["cniPlugins"],
                f"{CNI}/{kind}/{name}",
                ldflags=(
                    f"-X github.com/containernetworking/plugins/pkg/utils/buildversion"
                    f".BuildVersion={pin['cniPlugins']}",
                ),
            )
            for name, kind in CNI_PLUGINS.items()
        ),
        Binary("coredns", pin["coredns"], "github.com/coredns/coredns"),
        Binary(
            "kube-router",
            pin["kubeRouter"],
            f"{KUBE_ROUTER}/cmd/kube-router",
            ldflags=(f"-X {KUBE_ROUTER}/pkg/version.Version={pin['kubeRouter']}",),
        ),
    ]


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the cache, build nothing")
    args = parser.parse_args(argv)
    return build_command(lambda: pinned(repo), build, args.list, "node binaries")


if __name__ == "__main__":
    raise SystemExit(main())
