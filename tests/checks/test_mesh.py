"""Istio ambient mode enforces the model namespace's mTLS and authorization: ztunnel and
istio-cni are delivered by Flux and Argo CD alike, the namespaces are enrolled, the policies are
L4 only, and a policy no proxy can enforce fails the policy rules with its file and namespace."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kserve_gitops.checks import mesh, policy
from kserve_gitops.checks.rules import namespace_labels
from kserve_gitops.repo import install_plan, render
from kserve_gitops.repo.render import Obj
from tests import REPO
from tests.broken_copy import edit, run_validate

ENVS = REPO.environment_names
PEER_AUTH = (
    "platform/security/peerauthentication.yaml: PeerAuthentication/default (namespace models)"
)
AUTHZ = (
    "platform/security/authorizationpolicy.yaml: AuthorizationPolicy/predictors-allow-callers "
    "(namespace models)"
)


@pytest.fixture(scope="module")
def staging() -> list[Obj]:
    return render.environment_objects(REPO, "staging")


@pytest.mark.parametrize("env", ENVS)
def test_ambient_mode_is_delivered_by_both_tools(env: str) -> None:
    flux = {c.key: c for c in install_plan.flux_components(REPO, env)}
    argo = {c.key: c for c in install_plan.argocd_components(REPO, env)}
    for name, chart in (("istio-cni", "cni"), ("ztunnel", "ztunnel")):
        assert flux[name] == argo[name]
        assert (flux[name].chart, flux[name].version) == (chart, REPO.versions["istio"]["version"])
        assert flux[name].wave < flux["environments/" + env + "/platform/configs"].wave
    assert flux["ztunnel"].wave > flux["istiod"].wave
    objs = render.environment_objects(REPO, env)
    assert mesh.ambient_gaps(objs) == []
    for ns in ("models", "knative-serving"):
        assert namespace_labels(objs, ns)[mesh.AMBIENT_LABEL] == "ambient"


def _with(objs: list[Obj], change: Callable[[Obj, dict[str, Any]], None]) -> list[Obj]:
    out = []
    for o in objs:
        body = copy.deepcopy(o.body)
        change(o, body)
        out.append(Obj(o.source, body))
    return out


def _unlabel(ns: str) -> Callable[[Obj, dict[str, Any]], None]:
    def change(o: Obj, body: dict[str, Any]) -> None:
        if o.kind == "Namespace" and o.name == ns:
            body["metadata"]["labels"].pop(mesh.AMBIENT_LABEL)

    return change


def _drop_release(chart: str) -> Callable[[Obj, dict[str, Any]], None]:
    """The HelmRelease of `chart` installs another chart: its OCIRepository (Istio's charts are
    OCI artifacts, oci://ghcr.io/istio/release/charts/<chart>) names another one."""

    def change(o: Obj, body: dict[str, Any]) -> None:
        if o.kind == "OCIRepository" and body["spec"]["url"].endswith(f"/{chart}"):
            body["spec"]["url"] += "-not"

    return change


def _l7(o: Obj, body: dict[str, Any]) -> None:
    if o.kind == "AuthorizationPolicy":
        body["spec"]["rules"][2]["to"][0]["operation"]["paths"] = ["/metrics"]


def _injected(o: Obj, body: dict[str, Any]) -> None:
    if o.kind == "Namespace" and o.name == "models":
        body["metadata"]["labels"].pop(mesh.AMBIENT_LABEL)
        body["metadata"]["labels"]["istio-injection"] = "enabled"


BREAKS = [
    (_unlabel("models"), PEER_AUTH, "no proxy enforces it: namespace models has neither"),
    (_drop_release("ztunnel"), PEER_AUTH, "no HelmRelease installs ztunnel"),
    (_drop_release("cni"), AUTHZ, "no HelmRelease installs istio-cni"),
    (_l7, f"{AUTHZ}.spec.rules.2.to.0.operation.paths", "ztunnel enforces L4 only"),
    (
        _unlabel("knative-serving"),
        f"{AUTHZ}.spec.rules.0.from.0.source.principals",
        "sa/activator: namespace knative-serving is outside the mesh",
    ),
]


@pytest.mark.parametrize(("breaks", "field", "message"), BREAKS)
def test_a_policy_no_proxy_enforces_is_caught(
    staging: list[Obj], breaks: Callable, field: str, message: str
) -> None:
    assert list(mesh.check_mesh_enforced(staging, policy.context(REPO, "staging"))) == []
    found = dict(mesh.check_mesh_enforced(_with(staging, breaks), policy.context(REPO, "staging")))
    assert field in found, found
    assert message in found[field]


def test_sidecars_under_restricted_need_istio_cni(staging: list[Obj]) -> None:
    objs = _with(staging, _injected)
    assert list(mesh.check_mesh_enforced(objs, policy.context(REPO, "staging"))) == []
    objs = _with(objs, _drop_release("cni"))
    found = dict(mesh.check_mesh_enforced(objs, policy.context(REPO, "staging")))
    assert "refuses their istio-init container (NET_ADMIN)" in found[PEER_AUTH]


def test_the_probe_source_is_admitted_only_in_ambient_namespaces(staging: list[Obj]) -> None:
    ctx = policy.context(REPO, "staging")
    assert list(mesh.check_network_policies(staging, ctx)) == []
    found = dict(mesh.check_network_policies(_with(staging, _unlabel("models")), ctx))
    assert "NetworkPolicy/predictors-allow-callers.spec.ingress.3.from.0" in found


def test_validate_names_the_file_and_namespace_of_an_unenforced_policy(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(
        repo_copy / "platform/security/namespace-models.yaml",
        "    istio.io/dataplane-mode: ambient\n",
        "",
    )
    run_validate(repo_copy, capsys).assert_fails_with(
        [
            f"{PEER_AUTH}: [MESH-ENFORCED] no proxy enforces it: namespace models has neither "
            "istio.io/dataplane-mode: ambient nor sidecar injection"
        ]
    )


def test_messages_name_the_file_in_the_base_that_declares_an_object() -> None:
    declared = mesh._declaring_files(REPO, "dev")
    assert declared[("HelmRelease", "sklearn-iris", "flux-system")] == (
        "environments/base/models/helmrelease-sklearn-iris.yaml"
    )
    assert declared[("PeerAuthentication", "default", "models")] == (
        "platform/security/peerauthentication.yaml"
    )
