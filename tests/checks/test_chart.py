"""The inference-service chart through the Helm SDK, as Helm, Flux and Argo CD use it: every
ci scenario and environment renders and passes the pinned KServe CRD; bad values are refused
with a message naming the key and the constraint. (`helm lint --strict` of every scenario is
part of `make validate`: tests/checks/test_validate.py.)"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from kserve_gitops.repo import render as repo_render
from kserve_gitops.upstream import kube_schemas
from tests import REPO

CHART_DIR = REPO.model_chart
SCENARIOS = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
ENVS = REPO.environment_names
MINIMAL = {"model": {"storageUri": "pvc://sklearn-iris-models/v1"}}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: expected a mapping of values"
    return data


def env_values(env: str) -> dict[str, Any]:
    return load(repo_render.model_values_file(REPO, env, "sklearn-iris"))


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted keys set, e.g. {"predictor.timeout": 5}."""
    values = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def render(
    chart: helm.Chart, values: dict[str, Any], name: str = "sklearn-iris", namespace: str = "models"
) -> tuple[dict[str, Any], str]:
    """The one InferenceService the chart renders, and the install notes."""
    out = chart.render(values, name=name, namespace=namespace, is_install=True)
    notes = out.pop("inference-service/templates/NOTES.txt", "")
    docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["InferenceService"]
    return docs[0], notes


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert (meta["name"], meta["type"]) == ("inference-service", "application")
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    # The chart serves the KServe version the platform runs.
    assert meta["appVersion"] == REPO.versions["kserve"]["version"]
    assert meta["kubeVersion"] == ">=1.30.0-0"
    assert meta["description"] and meta["maintainers"] and meta["sources"] and meta["keywords"]


def test_required_scenarios_exist() -> None:
    names = {p.name for p in SCENARIOS}
    assert {
        "minimal-values.yaml",
        "knative-scale-to-zero-values.yaml",
        "standard-hpa-values.yaml",
        "v2-runtime-values.yaml",
        "canary-values.yaml",
        "standard-canary-values.yaml",
        "full-values.yaml",
    } <= names


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_renders_a_crd_valid_inference_service(chart: helm.Chart, scenario: Path) -> None:
    values = load(scenario)
    chart.validate_schema(values)
    isvc, notes = render(chart, values)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert "sklearn" not in predictor
    assert predictor["model"]["modelFormat"]["name"]
    assert predictor["model"]["storageUri"] == values["model"]["storageUri"]
    assert kube_schemas.check(REPO, isvc) == []
    assert f"inferenceservice/{isvc['metadata']['name']}" in notes


@pytest.mark.parametrize("env", ENVS)
def test_environment_values(chart: helm.Chart, env: str) -> None:
    values = env_values(env)
    chart.validate_schema(values)
    # Flux names the release <namespace>-<name> by default; the name must not depend on it.
    for release in ("sklearn-iris", "models-sklearn-iris"):
        isvc, _ = render(chart, values, name=release)
        assert isvc["metadata"]["name"] == "sklearn-iris"
    assert isvc["metadata"]["namespace"] == "models"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    labels = isvc["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "inference-service"
    assert labels["app.kubernetes.io/instance"] == "models-sklearn-iris"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    # No label with a version: KServe copies them into revisions (the chart's _helpers.tpl).
    assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
    assert labels["environment"] == env
    predictor = isvc["spec"]["predictor"]
    assert predictor["labels"]["app.kubernetes.io/instance"] == "models-sklearn-iris"
    assert "sklearn" not in predictor
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "sklearn"}
    assert model["protocolVersion"] == "v1"
    assert model["storageUri"] == "pvc://sklearn-iris-models/v1"
    assert kube_schemas.check(REPO, isvc) == []


def test_environments_differ_for_their_reasons(chart: helm.Chart) -> None:
    pred = {env: render(chart, env_values(env))[0]["spec"]["predictor"] for env in ENVS}
    assert [pred[e]["minReplicas"] for e in ENVS] == [0, 1, 2]
    assert pred["prod"]["maxReplicas"] >= 10 > pred["staging"]["maxReplicas"]
    assert pred["dev"]["timeout"] < pred["prod"]["timeout"]
    assert pred["prod"]["scaleMetric"] == "concurrency" and pred["prod"]["scaleTarget"] > 0
    prod = pred["prod"]["model"]["resources"]
    for resource in ("cpu", "memory"):  # Guaranteed QoS: requests == limits for both
        assert prod["requests"][resource] == prod["limits"][resource]
    dev = pred["dev"]["model"]["resources"]
    assert dev["requests"] != dev["limits"]


@pytest.mark.parametrize(("mode", "annotation"), [("knative", "Knative"), ("standard", "Standard")])
def test_deployment_mode_maps_to_kserve_v020_value(
    chart: helm.Chart, mode: str, annotation: str
) -> None:
    isvc, _ = render(chart, with_changes(MINIMAL, deploymentMode=mode))
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": annotation}


def test_unset_optionals_are_not_rendered(chart: helm.Chart) -> None:
    values = with_changes(
        MINIMAL, **{"predictor.canaryTrafficPercent": None, "predictor.timeout": None}
    )
    predictor = render(chart, values)[0]["spec"]["predictor"]
    for key in ("canaryTrafficPercent", "timeout", "scaleTarget", "scaleMetric", "annotations"):
        assert key not in predictor
    assert predictor["model"].keys() == {
        "modelFormat",
        "protocolVersion",
        "storageUri",
        "resources",
        "securityContext",  # secure by default (tests/checks/test_policy.py)
        "readinessProbe",  # the model's readiness, not the server's
    }


@pytest.mark.parametrize(
    ("protocol", "path"),
    [("v1", "/v1/models/sklearn-iris"), ("v2", "/v2/models/sklearn-iris/ready")],
)
def test_readiness_is_the_models_own(chart: helm.Chart, protocol: str, path: str) -> None:
    """KServe's sklearnserver without a model answers 404 yet passes the default probe."""
    values = with_changes(MINIMAL, **{"model.protocolVersion": protocol})
    model = render(chart, values)[0]["spec"]["predictor"]["model"]
    assert model["readinessProbe"] == {"httpGet": {"path": path, "port": 8080}}
    values = with_changes(MINIMAL, **{"model.readinessCheck": False})
    assert "readinessProbe" not in render(chart, values)[0]["spec"]["predictor"]["model"]
    canary = render(chart, load(CHART_DIR / "ci" / "standard-canary-values.yaml"))[0]
    assert canary["spec"]["canary"][0]["predictor"]["model"]["readinessProbe"] == {
        "httpGet": {"path": "/v1/models/sklearn-iris", "port": 8080}
    }


def test_progress_deadline_is_the_revisions_annotation(chart: helm.Chart) -> None:
    values = with_changes(
        MINIMAL, **{"predictor.progressDeadline": "60s", "predictor.annotations": {"a": "b"}}
    )
    predictor = render(chart, values)[0]["spec"]["predictor"]
    assert predictor["annotations"] == {"a": "b", "serving.knative.dev/progress-deadline": "60s"}


def test_canary_zero_is_rendered(chart: helm.Chart) -> None:
    values = with_changes(MINIMAL, **{"predictor.canaryTrafficPercent": 0})
    assert render(chart, values)[0]["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_tag_routing_annotation(chart: helm.Chart) -> None:
    values = with_changes(MINIMAL, tagRouting=True, **{"predictor.canaryTrafficPercent": 10})
    isvc, _ = render(chart, values)
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Knative",
        "serving.kserve.io/enable-tag-routing": "true",
    }
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert kube_schemas.check(REPO, isvc) == []


def test_standard_mode_canary_is_the_v020_canary_list(chart: helm.Chart) -> None:
    isvc, _ = render(chart, load(CHART_DIR / "ci" / "standard-canary-values.yaml"))
    assert isvc["spec"]["predictor"]["name"] == "v1"
    stable = isvc["spec"]["predictor"]
    # The canary runs with the stable's resources and security contexts.
    canary = isvc["spec"]["canary"][0]["predictor"]
    for key in ("resources", "securityContext", "readinessProbe"):
        assert canary["model"].pop(key) == stable["model"][key]
    assert canary.pop("securityContext") == stable["securityContext"]
    assert isvc["spec"]["canary"] == [
        {
            "trafficPercent": 20,
            "predictor": {
                "name": "v2",
                "minReplicas": 1,
                "model": {
                    "name": "kserve-container",
                    "modelFormat": {"name": "sklearn"},
                    "protocolVersion": "v1",
                    "storageUri": "pvc://sklearn-iris-models/v2",
                },
            },
        }
    ]
    isvc, _ = render(chart, load(CHART_DIR / "ci" / "standard-canary-values.yaml"))
    assert kube_schemas.check(REPO, isvc) == []
    # The CRD itself refuses a canary the chart would render wrongly.
    broken = copy.deepcopy(isvc)
    del broken["spec"]["canary"][0]["trafficPercent"]
    assert [v.path for v in kube_schemas.check(REPO, broken)] == ["spec.canary.0"]


def test_no_canary_by_default(chart: helm.Chart) -> None:
    for mode in ("knative", "standard"):
        isvc, _ = render(chart, with_changes(MINIMAL, deploymentMode=mode))
        assert "canary" not in isvc["spec"] and "name" not in isvc["spec"]["predictor"]


def test_label_precedence(chart: helm.Chart) -> None:
    values = with_changes(
        MINIMAL,
        commonLabels={"team": "ml", "app.kubernetes.io/name": "spoofed"},
        labels={"tier": "gold"},
        **{"predictor.labels": {"team": "override"}},
    )
    isvc, _ = render(chart, values)
    assert isvc["metadata"]["labels"]["app.kubernetes.io/name"] == "inference-service"
    assert isvc["metadata"]["labels"]["team"] == "ml"
    assert isvc["metadata"]["labels"]["tier"] == "gold"
    pod = isvc["spec"]["predictor"]["labels"]
    assert pod["team"] == "override" and "tier" not in pod


def test_notes_follow_the_protocol(chart: helm.Chart) -> None:
    _, v1 = render(chart, MINIMAL)
    _, v2 = render(chart, with_changes(MINIMAL, **{"model.protocolVersion": "v2"}))
    assert "/v1/models/sklearn-iris:predict" in v1 and '"instances"' in v1
    assert "/v2/models/sklearn-iris/infer" in v2 and '"inputs"' in v2


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"predictor.minReplica": 2}, "additional properties 'minReplica' not allowed"),
        ({"model.modelFormat.nme": "x"}, "additional properties 'nme' not allowed"),
        ({"predictor.maxReplicas": "3"}, "at '/predictor/maxReplicas': got string, want integer"),
        ({"predictor.canaryTrafficPercent": 150}, "canaryTrafficPercent': maximum: got 150"),
        ({"predictor.canaryTrafficPercent": 12.5}, "canaryTrafficPercent': got number, want"),
        ({"predictor.minReplicas": -1}, "at '/predictor/minReplicas': minimum: got -1, want 0"),
        ({"predictor.maxReplicas": 0}, "at '/predictor/maxReplicas': minimum: got 0, want 1"),
        ({"model.storageUri": "ftp://host/model"}, "at '/model/storageUri': 'ftp://host/model'"),
        ({"model.protocolVersion": "v3"}, "at '/model/protocolVersion': value must be one of"),
        ({"deploymentMode": "Serverless"}, "at '/deploymentMode': value must be one of"),
        ({"predictor.scaleMetric": "cpu"}, "at '/predictor/scaleMetric': value must be one of"),
        ({"model.resources.requests": {"cpu": 0.5}}, "at '/model/resources/requests/cpu'"),
        ({"model.resources.limits": {"memory": "1 GB"}}, "at '/model/resources/limits/memory'"),
        ({"model.resources.claims": []}, "additional properties 'claims' not allowed"),
        ({"model.env": [{"name": "A", "value": 1}]}, "at '/model/env/0/value': got number"),
        ({"model.env": [{"name": "A"}]}, "at '/model/env/0': missing property 'value'"),
        ({"commonLabels": {"team": "a b"}}, "at '/commonLabels/team': 'a b' does not match"),
        ({"tagRouting": "true"}, "at '/tagRouting': got string, want boolean"),
        ({"canary.trafficPercent": 101}, "at '/canary/trafficPercent': maximum: got 101"),
        ({"canary.name": "V2"}, "at '/canary/name': 'V2' does not match"),
        ({"canary.storageUri": "ftp://h/m"}, "at '/canary/storageUri': 'ftp://h/m' does not match"),
        ({"canary.weight": 5}, "additional properties 'weight' not allowed"),
        ({"predictor.progressDeadline": "1 min"}, "at '/predictor/progressDeadline': '1 min'"),
        ({"model.readinessCheck": "yes"}, "at '/model/readinessCheck': got string, want boolean"),
    ],
)
def test_schema_rejects(chart: helm.Chart, changes: dict[str, Any], expected: str) -> None:
    values = with_changes(MINIMAL, **changes)
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert expected in str(err.value)


def test_schema_rejects_missing_storage_uri(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="at '/model': missing property 'storageUri'"):
        chart.validate_schema({"model": {"protocolVersion": "v1"}})


def test_schema_scale_metric_follows_the_mode(chart: helm.Chart) -> None:
    standard = with_changes(MINIMAL, deploymentMode="standard")
    chart.validate_schema(with_changes(standard, **{"predictor.scaleMetric": "memory"}))
    with pytest.raises(helm.HelmValuesError, match="value must be one of '', 'cpu', 'memory'"):
        chart.validate_schema(with_changes(standard, **{"predictor.scaleMetric": "rps"}))
    with pytest.raises(helm.HelmValuesError, match="scaleTarget': maximum: got 150, want 100"):
        chart.validate_schema(with_changes(standard, **{"predictor.scaleTarget": 150}))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"predictor.minReplicas": 5, "predictor.maxReplicas": 3},
            "predictor.minReplicas (5) must be <= predictor.maxReplicas (3)",
        ),
        (
            {"deploymentMode": "standard", "predictor.minReplicas": 0},
            "predictor.minReplicas 0 (scale to zero) needs deploymentMode knative",
        ),
        (
            {"deploymentMode": "standard", "predictor.canaryTrafficPercent": 10},
            "predictor.canaryTrafficPercent needs deploymentMode knative",
        ),
        (
            {"canary.name": "v2", "canary.storageUri": "pvc://sklearn-iris-models/v2"},
            "canary needs deploymentMode standard",
        ),
        ({"predictor.name": "v1"}, "predictor.name needs deploymentMode standard"),
        ({"deploymentMode": "standard", "tagRouting": True}, "tagRouting needs deploymentMode"),
        (
            {"deploymentMode": "standard", "canary.storageUri": "pvc://sklearn-iris-models/v2"},
            "canary.name is required with canary.storageUri",
        ),
        (
            {
                "deploymentMode": "standard",
                "predictor.name": "v2",
                "canary.name": "v2",
                "canary.storageUri": "pvc://sklearn-iris-models/v2",
            },
            'canary.name "v2" must differ from predictor.name',
        ),
        (
            {
                "deploymentMode": "standard",
                "canary.name": "v2",
                "canary.storageUri": "pvc://sklearn-iris-models/v2",
                "canary.minReplicas": 3,
            },
            "canary.minReplicas (3) must be <= predictor.minReplicas (1)",
        ),
        (
            {"annotations": {"serving.kserve.io/enable-tag-routing": "true"}},
            "annotations must not set serving.kserve.io/enable-tag-routing",
        ),
        (
            {"model.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
            'model.env lists "A" twice',
        ),
        (
            {"annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
            "annotations must not set serving.kserve.io/deploymentMode",
        ),
    ],
)
def test_render_fails_on_cross_field_rules(
    chart: helm.Chart, changes: dict[str, Any], expected: str
) -> None:
    values = with_changes(MINIMAL, **changes)
    chart.validate_schema(values)  # valid field by field: only the template can catch these
    with pytest.raises(helm.HelmRenderError) as err:
        chart.render(values, name="sklearn-iris", namespace="models")
    assert expected in str(err.value)


def test_long_release_name_needs_an_override(chart: helm.Chart) -> None:
    name = "a-release-name-that-is-far-too-long-for-kserve-x"
    with pytest.raises(helm.HelmRenderError, match="is 48 characters; at most 47"):
        chart.render(MINIMAL, name=name, namespace="models")
    isvc, _ = render(chart, with_changes(MINIMAL, fullnameOverride="short"), name=name)
    assert isvc["metadata"]["name"] == "short"


def _schema_leaves(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a user sets: nested objects of ours are descended into;
    maps and lists of Kubernetes data (labels, env, resource lists) are leaves."""
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub and key not in ("resources",):
            yield from _schema_leaves(sub, f"{path}.")
        elif key == "resources":
            yield from (f"{path}.{k}" for k in sub["properties"])
        else:
            yield path


def test_readme_documents_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    readme = (CHART_DIR / "README.md").read_text()
    table = set(
        re.findall(r"^\| `([A-Za-z.]+)` \| (?:string|integer|boolean|object|list) \|", readme, re.M)
    )
    assert table == set(_schema_leaves(schema))


def test_readme_defaults_match_values_yaml() -> None:
    defaults = load(CHART_DIR / "values.yaml")
    readme = (CHART_DIR / "README.md").read_text()
    rows = re.findall(r"^\| `([A-Za-z.]+)` \| \w+ \| ([^|]+) \|", readme, re.M)
    assert rows
    for key, documented in rows:
        node: Any = defaults
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        documented = documented.strip()
        if documented == "required":
            assert node is None, key
        else:
            assert yaml.safe_load(documented.strip("`")) == node, key


def test_schema_is_closed_at_every_level_of_ours() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def open_objects(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            closed = node.get("additionalProperties") is False
            if "properties" in node and node.get("type") == "object" and not closed:
                yield where
            for key, sub in node.items():
                yield from open_objects(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                yield from open_objects(sub, f"{where}/{i}")

    assert list(open_objects(schema, "")) == []
