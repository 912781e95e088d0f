"""Istio's values checked by Istio's own typed values (istio.operator.v1alpha1.Values): a typo
in istiod's values fails `make validate` with the file and the key, although istiod copies every
value into a ConfigMap; a value the chart ignores beside another (replicaCount with
autoscaleEnabled) is reported as having no effect; the committed schema follows the pins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kserve_gitops.localcluster import binaries
from kserve_gitops.repo import Repo
from kserve_gitops.upstream import charts, istio_values
from tests import REPO
from tests.conftest import Kgops
from tests.upstream.test_values import _edit, _errors

DEV_ISTIOD = "environments/dev/platform/controllers/values/istiod.yaml"
PROD_ISTIOD = "environments/prod/platform/controllers/values/istiod.yaml"
DEV_CNI = "environments/dev/platform/controllers/values/istio-cni.yaml"


def _chart(shared_charts: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    return charts.chart_dir(REPO, name, str(REPO.versions["istio"]["version"]), online=False)


def test_the_committed_schema_is_for_the_pinned_istio() -> None:
    schema = istio_values.load(REPO)
    assert schema[istio_values.META]["istio"] == str(REPO.versions["istio"]["version"])
    assert schema[istio_values.META]["valuesApi"] == REPO.versions["istio"]["valuesApi"]
    root = schema["definitions"][istio_values.ROOT]
    assert root["additionalProperties"] is False
    assert {"global", "pilot", "meshConfig", "profile", "cni"} <= set(root["properties"])


def test_a_schema_for_other_pins_is_refused(repo_copy: Path) -> None:
    pins = repo_copy / "versions.yaml"
    pins.write_text(pins.read_text().replace("version: 1.30.3", "version: 1.30.4", 1))
    with pytest.raises(istio_values.IstioValuesError, match=r"made for Istio 1\.30\.3.*1\.30\.4"):
        istio_values.load(Repo(repo_copy))


@pytest.mark.parametrize("chart", ["base", "istiod", "cni", "ztunnel"])
def test_each_istio_charts_own_defaults_pass(
    chart: str, shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The typed Values lags the charts (istiod's `pdb`, cni's `ambient.enablementSelectors`):
    what a chart's values.yaml declares is accepted, so the check refuses only what neither
    knows."""
    chart_dir = _chart(shared_charts, monkeypatch, chart)
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    internal = defaults["_internal_defaults_do_not_set"]
    assert istio_values.problems(istio_values.load(REPO), chart_dir, internal) == []


def test_typed_values_name_key_and_type(
    shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = istio_values.load(REPO)
    istiod = _chart(shared_charts, monkeypatch, "istiod")
    given = {
        "pilot": {"replicaCountt": 2, "autoscaleEnabled": "yes", "resources": {"requests": {}}},
        "autoscaleMin": 2,  # descoped: istiod copies .pilot to the top (zzy_descope_legacy.yaml)
        "global": {"proxy": {"resources": {}}, "logAsJosn": True},
    }
    found = {
        ".".join(path): reason for path, reason in istio_values.problems(schema, istiod, given)
    }
    assert set(found) == {"pilot.replicaCountt", "pilot.autoscaleEnabled", "global.logAsJosn"}
    assert "unknown key" in found["pilot.replicaCountt"]
    assert "istio.io/istio" in found["pilot.replicaCountt"]
    assert "'yes' is not of type 'boolean', 'null'" in found["pilot.autoscaleEnabled"]
    cni = _chart(shared_charts, monkeypatch, "cni")
    # cni copies .cni to the top: `ambient.enabled` and `cni.ambient.enabled` both count.
    ok = {"profile": "ambient", "ambient": {"enabled": True}, "cni": {"ambient": {"enabled": True}}}
    assert istio_values.problems(schema, cni, ok) == []
    wrong = istio_values.problems(schema, cni, {"ambient": {"enabeld": True}})
    assert [p for p, _ in wrong] == [["ambient", "enabeld"]]


def test_validate_refuses_a_typo_in_istiods_values_and_a_value_the_chart_ignores(
    repo_copy: Path, kgops: Kgops, shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    _edit(repo_copy / DEV_ISTIOD, (("pilot", "replicaCountt"), 2))
    # prod autoscales istiod: the chart renders no replicas, so a replicaCount is ignored.
    _edit(repo_copy / PROD_ISTIOD, (("pilot", "replicaCount"), 3))
    proc = kgops("validate", root=repo_copy)
    assert proc.returncode == 1
    errors = [e for e in _errors(proc.stderr) if "/platform/" in e]
    typo = [e for e in errors if DEV_ISTIOD in e and "pilot.replicaCountt: unknown key" in e]
    assert typo and "Istio's typed values" in typo[0], errors
    assert any(DEV_ISTIOD in e and "pilot.replicaCountt: 2 has no effect" in e for e in errors)
    assert any(PROD_ISTIOD in e and "pilot.replicaCount: 3 has no effect" in e for e in errors)
    assert len(errors) == 3, errors


def test_the_committed_schema_is_what_the_pinned_module_gives() -> None:
    """Rebuilds the schema with build/istio-values (skipped without Go or the built binary; in CI
    `make binaries` has not built it then, so it is built here, once, from the module proxy)."""
    try:
        gover = binaries.go_version()
    except binaries.BuildError as exc:
        pytest.skip(str(exc))
    if not istio_values.binary(REPO).path(gover).is_file() and not shutil.which("go"):
        pytest.skip("no Go toolchain")
    try:
        [(path, text)] = istio_values.produce(REPO).items()
    except istio_values.IstioValuesError as exc:
        pytest.skip(f"istio-values cannot be built here: {exc}")
    assert path == istio_values.schema_file(REPO)
    assert json.loads(text) == json.loads(path.read_text()), "run `kgops istio-values`"
