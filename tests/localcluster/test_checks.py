"""The cluster checks on object lists shaped as the API server returns them."""

from __future__ import annotations

from typing import Any

from kserve_gitops.localcluster import checks


def obj(kind: str, name: str, ns: str | None = "models", **rest: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"kind": kind, "metadata": meta, **rest}


def ready_pod(name: str, **spec: Any) -> dict[str, Any]:
    return obj(
        "Pod",
        name,
        spec={"nodeName": "kwok-dev-0", **spec},
        status={"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]},
    )


def test_a_healthy_cluster_has_no_finding() -> None:
    objects = [
        obj(
            "Deployment",
            "web",
            spec={"replicas": 1},
            status={
                "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}],
            },
        ),
        obj("ServiceAccount", "web"),
        obj("ConfigMap", "cfg"),
        ready_pod(
            "web-1", serviceAccountName="web", volumes=[{"name": "c", "configMap": {"name": "cfg"}}]
        ),
    ]
    assert checks.check(objects, []) == []


def test_a_pod_refused_by_pod_security_is_reported_with_the_servers_message() -> None:
    message = 'pods "web-1" is forbidden: violates PodSecurity "restricted:latest": privileged'
    dep = obj(
        "Deployment",
        "web",
        spec={"replicas": 1},
        status={
            "conditions": [
                {
                    "type": "Available",
                    "status": "False",
                    "message": "Deployment does not have minimum",
                }
            ]
        },
    )
    rs = obj(
        "ReplicaSet",
        "web-1",
        status={"conditions": [{"type": "ReplicaFailure", "status": "True", "message": message}]},
    )
    found = checks.check([dep, rs], [])
    assert [f.ref for f in found] == ["Deployment/models/web", "ReplicaSet/models/web-1"]
    assert found[1].field == "pod template (ReplicaFailure)"
    assert "violates PodSecurity" in found[1].message


def test_a_statefulset_without_pods_gets_the_failed_create_event() -> None:
    sts = obj("StatefulSet", "db", spec={"replicas": 1}, status={"readyReplicas": 0})
    event = {
        "reason": "FailedCreate",
        "type": "Warning",
        "lastTimestamp": "2026-11-30T10:00:00Z",
        "involvedObject": {"kind": "StatefulSet", "namespace": "models", "name": "db"},
        "message": 'serviceaccount "ghost" not found',
    }
    (finding,) = checks.check([sts], [event])
    assert str(finding) == (
        'StatefulSet/models/db: status.readyReplicas: 0/1: serviceaccount "ghost" not found'
    )


def test_missing_references_and_unbound_claims_name_the_pod_field() -> None:
    pod = ready_pod(
        "web-1",
        serviceAccountName="ghost",
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
        ],
        containers=[
            {
                "name": "c",
                "env": [
                    {"name": "K", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}
                ],
            }
        ],
    )
    pvc = obj("PersistentVolumeClaim", "models", status={"phase": "Pending"})
    found = [str(f) for f in checks.check([pod, pvc], [])]
    assert found == [
        "Pod/models/web-1: spec.serviceAccountName: ServiceAccount models/ghost does not exist",
        "Pod/models/web-1: spec.volumes[data]: claim models/models is not Bound",
        "Pod/models/web-1: containers[c].env[K]: Secret models/creds does not exist",
    ]


def test_unscheduled_pods_and_unestablished_crds_are_findings() -> None:
    pod = obj(
        "Pod",
        "big",
        status={
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                }
            ],
        },
    )
    crd = obj("CustomResourceDefinition", "x.example.com", ns=None, status={"conditions": []})
    found = [str(f) for f in checks.check([pod, crd], [])]
    assert found == [
        "CustomResourceDefinition/x.example.com: status.conditions[Established]: not Established",
        "Pod/models/big: status.conditions[PodScheduled]: 0/3 nodes are available: 3 "
        "Insufficient cpu.",
    ]


def test_a_reference_only_a_missing_controller_creates_is_not_checked_not_passed() -> None:
    pod = ready_pod(
        "ztunnel-1", volumes=[{"name": "ca", "configMap": {"name": "istio-ca-root-cert"}}]
    )
    unchecked: list[checks.Finding] = []
    assert checks.check([pod], [], unchecked) == []
    assert [str(f) for f in unchecked] == [
        "Pod/models/ztunnel-1: spec.volumes[ca]: ConfigMap models/istio-ca-root-cert: istiod "
        "publishes it into every namespace at runtime"
    ]
    # Without a place for them, such references are findings like any other.
    assert len(checks.check([pod], [])) == 1
