"""Every environment declares the storage its models load from: the policies (`kgops policy`,
and so `make validate`) fail, naming the values file, the storageUri field and what should
provide it, when nothing does."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from kserve_gitops.checks import policy, storage
from kserve_gitops.repo import render
from kserve_gitops.repo.render import Obj
from tests import REPO
from tests.broken_copy import edit, run_policy

DEV_VALUES = "environments/dev/models/sklearn-iris.yaml"
PROD_VALUES = "environments/prod/models/sklearn-iris.yaml"


@pytest.mark.parametrize(
    ("env", "modes"),
    [("dev", ["ReadWriteOnce"]), ("staging", ["ReadWriteMany"]), ("prod", ["ReadWriteMany"])],
)
def test_each_environment_declares_the_claim_its_model_names(env: str, modes: list[str]) -> None:
    objs = render.environment_objects(REPO, env)
    (isvc,) = [o for o in objs if o.kind == "InferenceService"]
    uri = isvc.body["spec"]["predictor"]["model"]["storageUri"]
    claim = uri.removeprefix("pvc://").split("/")[0]
    (pvc,) = [o for o in objs if o.kind == "PersistentVolumeClaim" and o.name == claim]
    assert pvc.body["metadata"]["namespace"] == isvc.body["metadata"]["namespace"]
    assert pvc.body["spec"]["accessModes"] == modes
    assert pvc.body["spec"]["resources"]["requests"]["storage"]
    assert list(storage.check_storage_provided(objs, policy.context(REPO, env))) == []


def _isvc_with(objs: list[Obj], **predictor: object) -> list[Obj]:
    out = []
    for o in objs:
        body = copy.deepcopy(o.body)
        if o.kind == "InferenceService":
            model = predictor.pop("storageUri", None)
            body["spec"]["predictor"].update(predictor)
            if model:
                body["spec"]["predictor"]["model"]["storageUri"] = model
        out.append(Obj(o.source, body))
    return out


def test_a_bucket_needs_a_declared_service_account_with_credentials() -> None:
    objs = render.environment_objects(REPO, "prod")
    broken = _isvc_with(objs, storageUri="s3://models/sklearn-iris/v1")
    (problem,) = storage.check_storage_provided(broken, policy.context(REPO, "prod"))
    assert problem[0] == f"{PROD_VALUES}: model.storageUri (InferenceService/sklearn-iris)"
    assert "expected predictor.serviceAccountName naming a ServiceAccount" in problem[1]
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "model-reader", "namespace": "models"},
        "secrets": [{"name": "model-store-credentials"}],
    }
    fixed = _isvc_with(
        objs, storageUri="s3://models/sklearn-iris/v1", serviceAccountName="model-reader"
    )
    ctx = policy.context(REPO, "prod")
    assert list(storage.check_storage_provided([*fixed, Obj("t", sa)], ctx)) == []


BROKEN = {
    "claim nobody declares": (
        lambda r: edit(
            r / "environments/dev/platform/configs/kustomization.yaml", "  - model-store.yaml\n", ""
        ),
        [
            DEV_VALUES,
            "model.storageUri",
            "[STORAGE-PROVIDED]",
            "no PersistentVolumeClaim 'sklearn-iris-models' in namespace 'models'",
            "declare it in environments/dev/platform/configs",
        ],
    ),
    "replicas across nodes on a ReadWriteOnce claim": (
        lambda r: edit(r / DEV_VALUES, "maxReplicas: 1", "maxReplicas: 3"),
        [
            DEV_VALUES,
            "model.storageUri",
            "['ReadWriteOnce']",
            "up to 3 replicas",
            "ReadWriteMany or ReadOnlyMany",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_policy_fails_on_storage_nothing_provides(
    case: str, repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker, expected = BROKEN[case]
    breaker(repo_copy)
    run_policy(repo_copy, capsys).assert_fails_with(expected, on_line_with="[STORAGE-PROVIDED]")
