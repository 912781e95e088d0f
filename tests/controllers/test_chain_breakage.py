"""Bad input against the running chain: one kwok cluster with dev's platform, the controllers as
processes and our model deployed (the kwok e2e's steps up to the InferenceService), then
InferenceServices that differ from ours by one field. Each is refused by the component that
owns the rule, and the failure names that component, the field and its message."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.controllers import binaries as controller_binaries
from kserve_gitops.e2e.executor import Executor
from kserve_gitops.e2e.plan import build
from kserve_gitops.e2e.provider import KwokCluster, run_env
from kserve_gitops.e2e.steps import NotRun, ObserveChain
from kserve_gitops.localcluster import binaries, controlplane
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.kwok
NS = "models"


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    need_binaries(
        lambda: binaries.locate(binaries.pinned(REPO)),
        lambda: controller_binaries.locate(REPO),
        root=True,
    )
    report = tmp_path_factory.mktemp("chain-breakage")
    lines: list[str] = []
    cluster = KwokCluster(REPO, "chainbreak", lines.append)
    bins = cluster.prepare()
    kubeconfig = controlplane.kubeconfig_file(REPO, "chainbreak")
    runner = Runner(report / "commands.log", lines.append, run_env(kubeconfig, bins), REPO.root)
    plan = dataclasses.replace(build(REPO, "dev", "kwok"), kubeconfig=kubeconfig)
    executor = Executor(plan, runner, report, lines.append, kwok=cluster)
    try:
        for step in plan.steps:
            if isinstance(step, ObserveChain):
                break  # our InferenceService is installed: the chain runs
            wanted = step.layer in ("cluster", "model", "deploy") or "platform" in step.layer
            if wanted and not isinstance(step, NotRun):
                executor.execute(step)
        yield executor
    finally:
        cluster.stop(keep=False)


def ours(executor: Executor) -> dict[str, Any]:
    """Our InferenceService as the chart rendered it for dev, ready to be applied under a new
    name."""
    model = executor.plan.models[0]
    argv = ["kubectl", "get", "inferenceservice", model, "-n", NS, "-o", "json"]
    live = json.loads(executor.runner.run(argv, quiet=True))
    meta = live["metadata"]
    return {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {
            "namespace": NS,
            "labels": meta.get("labels") or {},
            "annotations": {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if not k.startswith("kubectl.kubernetes.io/")
            },
        },
        "spec": live["spec"],
    }


def variant(executor: Executor, name: str, change: Callable[[dict[str, Any]], None]) -> str:
    isvc = copy.deepcopy(ours(executor))
    isvc["metadata"]["name"] = name
    change(isvc)
    return json.dumps(isvc)


def apply(executor: Executor, body: str, dry_run: bool = False) -> str:
    argv = ["kubectl", "apply", "--server-side", "--field-manager", "kgops-test", "-f", "-"]
    return executor.runner.run(
        [*argv, *(["--dry-run=server"] if dry_run else [])], stdin=body, quiet=True
    )


def conditions_until(
    executor: Executor, name: str, found: Callable[[str], bool], timeout_s: float = 120
) -> str:
    """The InferenceService's conditions and model status and its revision's Deployment's
    conditions, as text, once `found` holds (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = executor.runner.run(
            [
                "kubectl",
                "get",
                f"inferenceservice/{name}",
                "-n",
                NS,
                "-o",
                "jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}"
                "{'\\n'}{end}modelStatus {.status.modelStatus}{'\\n'}",
            ],
            quiet=True,
        )
        deps = executor.runner.run(
            [
                "kubectl",
                "get",
                "deployments",
                "-n",
                NS,
                "-l",
                f"serving.kserve.io/inferenceservice={name}",
                "-o",
                "jsonpath={range .items[*].status.conditions[*]}{.type}={.status} {.reason}: "
                "{.message}{'\\n'}{end}",
            ],
            quiet=True,
        )
        text = out + deps
        if found(text) or time.monotonic() > deadline:
            return text
        time.sleep(3)


def test_kserve_webhook_refuses_min_replicas_above_max(executor: Executor) -> None:
    def change(isvc: dict[str, Any]) -> None:
        isvc["spec"]["predictor"]["minReplicas"] = 3
        isvc["spec"]["predictor"]["maxReplicas"] = 1

    with pytest.raises(CommandError) as err:
        apply(executor, variant(executor, "bad-replicas", change), dry_run=True)
    msg = str(err.value)
    assert 'admission webhook "inferenceservice.kserve-webhook-server.validator"' in msg, msg
    assert "denied the request" in msg and "max" in msg.lower(), msg


def test_a_model_format_no_runtime_serves_is_refused_by_kserve(executor: Executor) -> None:
    def change(isvc: dict[str, Any]) -> None:
        model = isvc["spec"]["predictor"]["model"]
        model["modelFormat"] = {"name": "kgops-no-such-format"}
        model.pop("runtime", None)

    body = variant(executor, "bad-format", change)
    try:
        apply(executor, body)
    except CommandError as exc:  # refused at admission: KServe's webhook names the format
        assert "kserve-webhook-server" in str(exc) and "kgops-no-such-format" in str(exc)
        return
    text = conditions_until(executor, "bad-format", lambda t: "NoSupportingRuntime" in t)
    # KServe's controller: the model status, not a condition, says no runtime serves it.
    assert '"transitionStatus":"InvalidSpec"' in text, text
    assert '"reason":"NoSupportingRuntime"' in text, text
    assert "No runtime found to support specified framework/version" in text, text


def test_knative_refuses_a_pod_field_dev_does_not_enable(executor: Executor) -> None:
    """dev's KnativeServing enables no kubernetes.podspec-affinity: KServe derives a Knative
    Service with the predictor's affinity, and Knative's webhook refuses it."""

    def change(isvc: dict[str, Any]) -> None:
        term = {"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]}
        required = {"nodeSelectorTerms": [term]}
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
        isvc["spec"]["predictor"]["affinity"] = affinity

    apply(executor, variant(executor, "bad-affinity", change))  # KServe admits it
    text = conditions_until(executor, "bad-affinity", lambda t: "affinity" in t)
    assert "validation.webhook.serving.knative.dev" in text, text
    assert "must not set the field(s): spec.template.spec.affinity" in text, text


def test_pod_security_refuses_the_pod_once_kserve_adds_its_modelcar(executor: Executor) -> None:
    """An OCI model (oci://) is served from a modelcar: KServe's pod mutator adds the modelcar
    sidecar and its init container to the revision's pod with only runAsUser set, which the
    restricted models namespace refuses; KServe and Knative admitted the InferenceService."""

    def change(isvc: dict[str, Any]) -> None:
        isvc["spec"]["predictor"]["model"]["storageUri"] = "oci://registry.invalid/sklearn-iris:v1"

    apply(executor, variant(executor, "bad-modelcar", change))
    text = conditions_until(executor, "bad-modelcar", lambda t: "PodSecurity" in t, 180)
    assert 'violates PodSecurity "restricted:' in text, text
    assert '"modelcar"' in text and "allowPrivilegeEscalation != false" in text, text
