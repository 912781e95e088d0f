"""The verdict over the chain: Ready, held back only by the unreconciled ingress (not run), or
failed with the condition that is not True."""

from __future__ import annotations

from typing import Any

from kserve_gitops.controllers.chain import Link, closing, render, verdict


def c(type_: str, status: str = "True", reason: str = "", **kw: Any) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "", **kw}


def chain(**override: list[dict[str, Any]]) -> list[Link]:
    """A chain as the controllers leave it on kwok: everything True but what the ingress
    decides."""
    links = [
        Link("KnativeServing", "knative-serving/knative-serving", [c("Ready")]),
        Link(
            "InferenceService",
            "models/sklearn-iris",
            [
                c("PredictorReady", "Unknown", "RevisionMissing"),
                c("IngressReady", "False"),
                c("Ready", "False", "PredictorNotReady"),
            ],
        ),
        Link(
            "Knative Service",
            "models/sklearn-iris-predictor",
            [
                c("ConfigurationsReady"),
                c("RoutesReady", "Unknown", "IngressNotConfigured"),
                c("Ready", "Unknown", "IngressNotConfigured"),
            ],
        ),
        Link("Configuration", "models/sklearn-iris-predictor", [c("Ready")]),
        Link(
            "Revision",
            "models/sklearn-iris-predictor-00001",
            [
                c("ContainerHealthy"),
                c("ResourcesAvailable"),
                c("Ready"),
                c("Active", "False", "NoTraffic", severity="Info"),
            ],
        ),
        Link(
            "Deployment",
            "models/sklearn-iris-predictor-00001-deployment",
            [c("Available")],
            ["Pod p: phase Running, Ready=True, node kwok-dev-0"],
        ),
        Link(
            "Route",
            "models/sklearn-iris-predictor",
            [
                c("AllTrafficAssigned"),
                c("IngressReady", "Unknown", "IngressNotConfigured"),
                c("Ready", "Unknown", "IngressNotConfigured"),
            ],
        ),
        Link("KIngress", "models/sklearn-iris-predictor", []),
    ]
    for link in links:
        if link.kind in override:
            link.conditions = override[link.kind]
    return links


def test_held_only_by_the_ingress_is_not_run_and_names_the_condition() -> None:
    v = verdict(chain())
    assert v.status == "held"
    assert "InferenceService Ready=False (PredictorNotReady" in v.reason
    assert "KIngress models/sklearn-iris-predictor" in v.reason
    assert "net-istio" in v.reason


def test_ready_is_ready() -> None:
    assert verdict(chain(InferenceService=[c("Ready")])).status == "ready"


def test_a_revision_condition_fails_with_its_reason() -> None:
    v = verdict(
        chain(
            Revision=[
                c("ContainerHealthy", "False", "ContainerMissing"),
                c("Ready", "False", "ContainerMissing"),
            ]
        )
    )
    assert v.status == "failed"
    assert "Revision models/sklearn-iris-predictor-00001 ContainerHealthy=False" in v.reason


def test_a_ready_ingress_does_not_excuse_the_route() -> None:
    v = verdict(chain(KIngress=[c("Ready")]))
    assert v.status == "failed"
    assert "Route models/sklearn-iris-predictor IngressReady=Unknown" in v.reason


def test_no_pod_running_fails() -> None:
    links = chain()
    next(x for x in links if x.kind == "Deployment").notes = []
    v = verdict(links)
    assert v.status == "failed" and "no pod Running" in v.reason


def test_a_missing_link_is_pending() -> None:
    links = [x for x in chain() if x.kind != "Revision"]
    assert verdict(links).status == "pending"


def test_render_lists_every_condition() -> None:
    text = render(chain())
    assert "Revision models/sklearn-iris-predictor-00001\n    ContainerHealthy=True" in text
    assert "KIngress models/sklearn-iris-predictor\n    (no conditions" in text


def test_closing_lines_name_processes_links_and_canary() -> None:
    links = chain()
    v = verdict(links)
    lines = closing(
        {
            "processes": {
                "kserve-manager": {
                    "deployment": "kserve/kserve-controller-manager",
                    "exit_code": None,
                },
                "knative-serving-webhook": {
                    "deployment": "knative-serving/webhook",
                    "exit_code": 1,
                },
            },
            "webhooks_served": ["a", "b"],
            "not_buildable": {"istiod": "not a Go module version"},
        },
        {
            "verdict": v.status,
            "reason": v.reason,
            "links": [x.__dict__ for x in links],
            "canary": ["canary v2 10%: traffic [r2 10%, r1 90%]"],
        },
    )
    assert lines[0] == "controllers as processes: 2, 2 webhooks served by them:"
    assert "  knative-serving-webhook for knative-serving/webhook (exited 1)" in lines
    assert "  not built: istiod: not a Go module version" in lines
    assert (
        "  Revision models/sklearn-iris-predictor-00001: ContainerHealthy=True "
        "ResourcesAvailable=True Ready=True Active=False" in lines
    )
    assert "  KIngress models/sklearn-iris-predictor: (no conditions)" in lines
    assert lines[-1] == "  canary: canary v2 10%: traffic [r2 10%, r1 90%]"
