"""The NetworkPolicy engine's command line, identity and RBAC, the probes' selectors and report,
and the ipsets the host state records: offline, no cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kserve_gitops.node import host, netpol
from kserve_gitops.node import policyprobe as pp
from kserve_gitops.node.binaries import pinned
from tests import REPO, markdown_rows
from tests.node.test_config import layout


def test_kube_router_runs_the_firewall_only_as_its_own_user() -> None:
    lay = layout()
    argv = netpol.argv(Path("/b/kube-router"), lay, Path("/c/kr.kubeconfig"), 4242)
    assert "--run-firewall=true" in argv
    assert {"--run-router=false", "--run-service-proxy=false", "--enable-cni=false"} <= set(argv)
    assert f"--hostname-override={lay.node_name}" in argv
    assert f"--service-cluster-ip-range={lay.service_cidr}" in argv
    role, binding = netpol.rbac()
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": netpol.USER}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    reads = {r for rule in role["rules"] if "watch" in rule["verbs"] for r in rule["resources"]}
    assert {"pods", "namespaces", "nodes", "networkpolicies"} <= reads
    writes = {r for rule in role["rules"] if "create" in rule["verbs"] for r in rule["resources"]}
    assert writes == {"events"}


def test_kube_router_is_pinned_and_built_with_the_node() -> None:
    built = {b.name: b for b in pinned(REPO)}
    assert built["kube-router"].version == REPO.versions["node"]["kubeRouter"]
    assert built["kube-router"].package.endswith("/cmd/kube-router")


@pytest.mark.parametrize(
    ("selector", "query"),
    [
        ({}, ""),
        (None, ""),
        ({"matchLabels": {"app": "activator"}}, "app=activator"),
        (
            {
                "matchExpressions": [
                    {"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}
                ]
            },
            "serving.kserve.io/inferenceservice",
        ),
        (
            {
                "matchExpressions": [
                    {"key": "a", "operator": "In", "values": ["x", "y"]},
                    {"key": "b", "operator": "DoesNotExist"},
                ]
            },
            "a in (x,y),!b",
        ),
    ],
)
def test_label_selectors_become_api_queries(selector: dict | None, query: str) -> None:
    assert pp.selector_string(selector) == query


def test_report_table_has_a_row_per_policy() -> None:
    allowed = pp.Result("knative-serving/a (app=activator)", "models/p:8012", "answered", 0.1)
    refused = pp.Result("x/o", "models/p:8012", "refused", 0.01, "Connection refused")
    text = pp.table(
        [
            pp.Row("models/allow", ["models/p"], [allowed], [refused]),
            pp.Row("models/deny", [], [], [refused]),
        ]
    )
    head, allow, deny = markdown_rows(text)
    assert head[0] == "policy" and len(text.splitlines()) == 4
    assert allow[:3] == ["models/allow", "models/p", "-"] and allow[3].startswith("knative")
    assert deny[:4] == ["models/deny", "-", "-", "-"] and "refused (0.01s)" in deny[4]


def test_host_state_saves_the_ipsets(tmp_path: Path) -> None:
    state = host.HostState({"vm/x": "1"}, {}, {"lo"}, {"before"})
    state.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["ipsets"] == ["before"]
    assert host.HostState.load(tmp_path / "s.json").sets == {"before"}
    old = {"sysctls": {}, "iptables": {}, "links": []}  # a state saved before ipsets were
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert host.HostState.load(tmp_path / "old.json").sets == set()
