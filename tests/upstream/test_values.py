"""`make validate` checks the values files passed to upstream charts: the chart's values schema,
a strict check of what the chart renders with them, and values that change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kserve_gitops.repo import Repo
from kserve_gitops.upstream import charts, values
from kserve_gitops.upstream.charts import ChartRef
from tests import REPO
from tests.conftest import Kgops

GATEWAY = "environments/prod/platform/controllers/values/istio-ingressgateway.yaml"
KSERVE = "environments/dev/platform/kserve/values/kserve-resources.yaml"


def _edit(path: Path, *changes: tuple[tuple[str, ...], object]) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    for keys, value in changes:
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  - ")]


def test_broken_upstream_values_name_file_and_key_path(
    repo_copy: Path, kgops: Kgops, shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    # The gateway chart's values.schema.json refuses a string count and an unknown key.
    _edit(repo_copy / GATEWAY, (("autoscaling", "minReplicas"), "two"), (("replica",), 2))
    # kserve-resources has no schema: a typo'd nesting changes nothing the chart renders, and a
    # typo inside resources renders a Deployment the Kubernetes schema refuses.
    _edit(
        repo_copy / KSERVE,
        (("kserve", "controler"), {"deploymentMode": "Knative"}),
        (("kserve", "controller", "resources", "limts"), {"cpu": "1"}),
    )
    proc = kgops("validate", root=repo_copy)
    assert proc.returncode == 1
    expected = {
        "wrong type": [GATEWAY, "autoscaling.minReplicas: got string, want integer"],
        "unknown key": [GATEWAY, "replica: unknown key", "values.schema.json"],
        "no effect": [KSERVE, 'kserve.controler: {"deploymentMode": "Knative"} has no effect'],
        "refused object": [KSERVE, "Deployment/kserve-controller-manager", "resources", "limts"],
    }
    errors = _errors(proc.stderr)
    for case, parts in expected.items():
        assert any(all(p in e for p in parts) for e in errors), (case, errors)
    upstream = [e for e in errors if "/platform/" in e]
    assert len(upstream) == len(expected), upstream


def test_no_effect_reports_typos_not_defaults_or_used_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "offline" / "demo" / "1.0.0"
    (folder / "templates").mkdir(parents=True)
    (folder / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.0.0\n")
    (folder / "values.yaml").write_text("replicas: 1\nimage:\n  tag: v1\n  pullPolicy: Always\n")
    (folder / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "data:\n  replicas: {{ .Values.replicas | quote }}\n  tag: {{ .Values.image.tag }}\n"
    )
    monkeypatch.setenv("CHART_DIR", str(tmp_path / "offline"))
    ref = ChartRef("demo", "1.0.0", "https://charts.example.invalid")
    chart_dir = charts.ensure(REPO, ref, tmp_path / "cache")
    given = {
        "replicas": 3,  # used
        "image": {"tag": "v1", "pullPolicy": "Never", "tga": "v2"},  # default, ignored, typo
        "replica": 2,  # typo
        "imgae": {"tag": "v3"},  # typo'd parent: reported whole
    }
    install = values.Install("demo", "apps", ref, given, "values/demo.yaml")
    shutil.copy(REPO.versions_file, tmp_path / "versions.yaml")
    scratch = Repo(tmp_path)  # its .cache keeps the results
    objects, problems = values.check_install(scratch, install, chart_dir)
    assert [body["data"] for _, body in objects] == [{"replicas": "3", "tag": "v1"}]
    reported = sorted(p.split(": ")[1] for p in problems)
    assert reported == ["image.pullPolicy", "image.tga", "imgae", "replica"]
    assert all(p.startswith("values/demo.yaml (values of demo 1.0.0") for p in problems)
    assert list((tmp_path / ".cache" / "upstream-values").glob("*.json"))  # kept for next run


def test_without_the_chart_cache_the_checks_are_not_run_and_ci_fails(
    repo_copy: Path, kgops: Kgops, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(repo_copy / ".cache" / "charts", ignore_errors=True)
    monkeypatch.delenv("CHART_DIR", raising=False)
    monkeypatch.delenv("CI", raising=False)
    proc = kgops("validate", root=repo_copy)
    assert proc.returncode == 0, proc.stderr
    assert "NOT RUN (not passed): values files of upstream charts" in proc.stdout
    assert "make charts" in proc.stdout and "CHART_DIR" in proc.stdout
    assert "validation passed (with checks NOT RUN, see above)" in proc.stdout
    monkeypatch.setenv("CI", "true")
    proc = kgops("validate", root=repo_copy)
    assert proc.returncode == 1
    assert "is not in .cache/charts: run `make charts` online" in proc.stderr


def test_an_edited_chart_in_the_cache_fails_validate(
    repo_copy: Path, kgops: Kgops, shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    assert kgops("charts", root=repo_copy).returncode == 0
    ref = next(r for r in charts.required(REPO) if r.chart == "gateway")
    values_yaml = repo_copy / ".cache" / "charts" / ref.chart / ref.version / "values.yaml"
    values_yaml.write_text(values_yaml.read_text() + "# edited\n")
    monkeypatch.delenv("CHART_DIR")
    proc = kgops("validate", root=repo_copy)
    assert proc.returncode == 1
    assert f"files of {ref} changed since they were cached" in proc.stderr
