"""The cluster add-ons a real node's pods need, as kubeadm deploys them: CoreDNS (e2e/node/
coredns.yaml), with the locally built image and the Service address the kubelet gives pods as
their nameserver."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from kserve_gitops.base.tools import Runner
from kserve_gitops.node.config import Layout
from kserve_gitops.repo import Repo


def coredns(repo: Repo, layout: Layout, refs: Mapping[str, str]) -> list[dict[str, Any]]:
    objs = [o for o in yaml.safe_load_all((repo.e2e / "node" / "coredns.yaml").read_text()) if o]
    for obj in objs:
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = refs["coredns"]
        if obj["kind"] == "Service":
            obj["spec"]["clusterIP"] = layout.dns_ip
    return objs


def apply(repo: Repo, runner: Runner, layout: Layout, refs: Mapping[str, str]) -> None:
    body = "\n".join(json.dumps(o) for o in coredns(repo, layout, refs))
    runner.run(["kubectl", "apply", "-f", "-"], stdin=body, timeout=60)
    runner.run(
        [
            "kubectl",
            "rollout",
            "status",
            "deployment/coredns",
            "-n",
            "kube-system",
            "--timeout=180s",
        ],
        timeout=200,
    )
