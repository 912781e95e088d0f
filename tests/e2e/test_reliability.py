"""The reliability scenarios' budgets (from declared objects) and verdicts; the scenarios
themselves run on the real node in `make e2e-reliability`."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kserve_gitops.e2e import golden, model_steps, node_plan, plan, reliability, steps, traffic
from kserve_gitops.repo.render import RenderError
from tests import REPO

REVISION = {"metadata": {"name": "sklearn-iris-predictor-00001"}, "spec": {"timeoutSeconds": 30}}
AUTOSCALER = {
    "data": {
        "stable-window": "60s",
        "scale-to-zero-grace-period": "30s",
        "scale-to-zero-pod-retention-period": "0s",
    }
}


class Objects:
    """The live objects the budgets read: a stand-in for kubectl (ClusterPaths.get)."""

    def revision(self, model: str, namespace: str) -> str:
        return "sklearn-iris-predictor-00001"

    def get(self, kind: str, name: str, *rest: str) -> Any:
        return {"revision": REVISION, "configmap": AUTOSCALER}[kind]


def test_declared_reads_the_revision_autoscaler_and_probe() -> None:
    declared = reliability.Declared.read(Objects(), "sklearn-iris", "models")  # type: ignore[arg-type]
    assert declared == reliability.Declared(30.0, 60.0, 30.0)
    # Stable window, scale-to-zero period, then the termination grace (the revision's timeout).
    assert declared.scale_down_s == 120.0


def test_durations_as_knative_writes_them() -> None:
    assert [reliability.seconds(t) for t in ("0s", "60s", "2m", "0")] == [0, 60, 120, 0]


def _result(failed: int, budget: reliability.Budget, recovered: float | None) -> reliability.Result:
    outcomes = [traffic.Outcome(i / 20, 0.003, 200, (0,)) for i in range(40)]
    outcomes += [traffic.Outcome(2 + i / 20, None, 502, None, "bad gateway") for i in range(failed)]
    counts = traffic.counts(outcomes, {(0,)})
    return reliability.Result("container-kill", budget, counts, [], "", recovered)


def _budget(failed: int, within: float | None) -> reliability.Budget:
    return reliability.Budget(failed, 30, within, "declared", "answers again")


def test_a_fault_within_its_budget_holds() -> None:
    result = _result(3, _budget(201, 40), 12.5)
    assert result.breaches == []
    assert "container-kill: HELD" in result.text()
    assert result.summary()["held"] is True


def test_a_broken_budget_is_reported_with_each_breach() -> None:
    # The same run against a budget of no failures and a 5 s recovery: both breaches named.
    result = _result(3, _budget(0, 5), 12.5)
    assert result.breaches == [
        "3 failed request(s), budget 0",
        "answers again after 12.5s, budget 5s",
    ]
    assert "BROKEN" in result.text()
    never = _result(0, _budget(0, 5), None)
    assert never.breaches == ["answers again never, budget 5s"]
    restarted = _result(0, _budget(0, None), None)
    restarted.problems.append("kserve-container restarted")
    assert restarted.breaches == ["kserve-container restarted"]


def test_the_node_plan_runs_every_scenario_after_the_verification() -> None:
    built = plan.build(REPO, "dev", "node", reliability=True)
    scenarios = [s for s in built.steps if isinstance(s, model_steps.Reliability)]
    assert [s.scenario for s in scenarios] == list(node_plan.RELIABILITY_SCENARIOS)
    rows, want = golden.predictions(REPO, "sklearn-iris")[0]  # the golden set's first case
    assert all((s.instances, s.expected) == (rows, want) for s in scenarios)
    kinds = [type(s) for s in built.steps]
    # After the verification and the steady-state check (the rollout changes the service),
    # before the canary layer.
    assert (
        kinds.index(model_steps.Reliability)
        > kinds.index(steps.Reapply)
        > kinds.index(model_steps.ColdStart)
    )
    assert kinds.index(model_steps.ClusterCanary) > max(
        i for i, k in enumerate(kinds) if k is model_steps.Reliability
    )
    assert not any(
        isinstance(s, model_steps.Reliability) for s in plan.build(REPO, "dev", "node").steps
    )


def test_reliability_needs_the_real_node() -> None:
    with pytest.raises(RenderError, match="need the real node"):
        plan.build(REPO, "dev", "kwok", reliability=True)


class Live:
    """kubectl's view of a scaled-to-zero sklearn-iris (recorded in tests/argocd/data)."""

    def get(self, kind: str, name: str, *rest: str) -> Any:
        return yaml.safe_load(
            (REPO.root / "tests/argocd/data/sklearn-iris-scaled-to-zero.yaml").read_text()
        )


def test_each_event_records_argo_cds_verdict_beside_ours() -> None:
    state = reliability.inference_service_state(Live(), "sklearn-iris", "models", REPO)  # type: ignore[arg-type]
    assert "transitionStatus=InProgress" in state
    assert f"Argo CD {REPO.versions['argocd']['version']}: Progressing" in state
    assert "ours: Healthy" in state


def test_scenarios_can_be_chosen_and_keep_their_order() -> None:
    names = ("rollout", "broken-release")
    built = plan.build(REPO, "dev", "node", reliability=True, scenario_names=names)
    chosen = [s.scenario for s in built.steps if isinstance(s, model_steps.Reliability)]
    assert chosen == ["broken-release", "rollout"]  # the usual order, not the argument's
    with pytest.raises(RenderError, match="unknown typo-scenario"):
        plan.build(REPO, "dev", "node", reliability=True, scenario_names=("typo-scenario",))


def test_with_the_scenarios_the_model_carries_flux_origin_labels_from_the_start() -> None:
    """Flux's take-over must change no label (KServe copies them into revisions)."""

    def model_release(built: steps.Plan) -> steps.HelmInstall:
        return next(
            s
            for s in built.steps
            if isinstance(s, steps.HelmInstall) and s.release == "sklearn-iris"
        )

    labels = model_release(plan.build(REPO, "dev", "node", reliability=True)).values["labels"]
    assert labels == {
        "helm.toolkit.fluxcd.io/name": "sklearn-iris",
        "helm.toolkit.fluxcd.io/namespace": "flux-system",
    }
    assert "labels" not in model_release(plan.build(REPO, "dev", "node")).values
