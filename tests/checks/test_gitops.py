"""Flux and Argo CD deliver the same platform in the same order per environment, every
reference resolves, and a broken input (in a throwaway copy of the repository) fails."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from kserve_gitops.checks import platform_consistency
from kserve_gitops.repo import Repo, argocd, flux, install_plan, render
from tests import REPO
from tests.broken_copy import edit

ENVS = REPO.environment_names
ROOT = REPO.root


@pytest.mark.parametrize("env", ENVS)
def test_both_tools_install_the_same_components_in_the_same_order(env: str) -> None:
    flux_plan = install_plan.flux_components(REPO, env)
    argo_plan = install_plan.argocd_components(REPO, env)
    assert install_plan.differences(REPO, env) == []
    assert sorted(flux_plan, key=lambda c: (c.wave, c.key)) == sorted(
        argo_plan, key=lambda c: (c.wave, c.key)
    )
    order = [c.key for c in sorted(flux_plan, key=lambda c: c.wave)]
    assert order[:2] == ["istio-base", "kserve-crd"]
    # Models and monitoring both follow the kserve layer, independently of each other.
    assert set(order[-2:]) == {"sklearn-iris", f"environments/{env}/platform/monitoring"}


@pytest.mark.parametrize("env", ENVS)
def test_each_environment_has_exactly_its_components(env: str) -> None:
    names = sorted(c.name for c in install_plan.flux_components(REPO, env))
    expected = platform_consistency.expected_order(REPO, env)
    assert names == sorted(expected)
    assert "sklearn-iris" in expected  # the models come from the environment's values files


@pytest.mark.parametrize("env", ENVS)
def test_flux_layers_chain_by_depends_on(env: str) -> None:
    layers = flux.layers(REPO, env)
    assert [lay.name for lay in layers] == [
        "platform-crds",
        "platform-controllers",
        "platform-configs",
        "platform-kserve",
        "models",
        "platform-monitoring",
    ]
    for before, after in itertools.pairwise(layers[:-1]):
        assert after.depends_on == (before.name,)
    # The monitors and alerts exist even while a model fails to become Ready.
    assert layers[-1].depends_on == ("platform-kserve",)
    cluster = render.kustomize_build(REPO, render.flux_entry_point(REPO, env))
    for ks in (o for o in cluster if o["kind"] == "Kustomization"):
        assert ks["spec"]["wait"] is True and ks["spec"]["prune"] is True
        assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "kserve-gitops"}


@pytest.mark.parametrize("env", ENVS)
def test_models_layer_is_the_shared_base_with_the_environments_values(env: str) -> None:
    """environments/<env>/models: the HelmReleases of environments/base/models, each taking
    the ConfigMap generated from the environment's own values file, nothing else changed."""
    [base] = render.kustomize_build(REPO, ROOT / "environments/base/models")
    layer = render.kustomize_build(REPO, REPO.environment_dir(env) / "models")
    [release] = [o for o in layer if o["kind"] == "HelmRelease"]
    [values] = [o for o in layer if o["kind"] == "ConfigMap"]
    values_file = REPO.environment_dir(env) / "models/sklearn-iris.yaml"
    assert values["data"]["values.yaml"] == values_file.read_text()
    [ref] = release["spec"]["valuesFrom"]
    assert ref["name"] == values["metadata"]["name"] != "sklearn-iris-values"
    ref["name"] = "sklearn-iris-values"  # the base's name, before kustomize hashes it
    assert release == base


def _without_comments(path: Path) -> list[str]:
    lines = (line.rstrip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.lstrip().startswith("#")]


def test_no_file_is_the_same_in_every_environment() -> None:
    """What every environment shares lives once, in a base (environments/base, platform/): a
    file that is the same in each environment, comments aside, fails. Kustomizations are the
    exception: a configMapGenerator reads only files beside it (kustomize's load restrictor)."""
    dirs = [REPO.environment_dir(env) for env in ENVS]
    names = {p.relative_to(d) for d in dirs for p in d.rglob("*.yaml")}
    repeated = [
        str(name)
        for name in sorted(names)
        if name.name != "kustomization.yaml"
        and all((d / name).is_file() for d in dirs)
        and all(_without_comments(d / name) == _without_comments(dirs[0] / name) for d in dirs)
    ]
    assert repeated == []


@pytest.mark.parametrize("env", ENVS)
def test_every_referenced_path_and_values_file_exists(env: str) -> None:
    for layer in flux.layers(REPO, env):
        assert (ROOT / layer.path / "kustomization.yaml").is_file()
        for r in layer.releases:
            for f in r.values_files:  # none: the chart's defaults (kserve-crd)
                assert (ROOT / f).is_file(), (r.name, f)
    for app in argocd.applications(REPO, env):
        for f in app.value_files:
            assert (ROOT / f).is_file(), (app.name, f)
        if app.path:
            assert (ROOT / app.path).is_dir(), app.path


@pytest.mark.parametrize("env", ENVS)
def test_flux_and_argo_read_the_same_values_files(env: str) -> None:
    releases = {r.name: r for lay in flux.layers(REPO, env) for r in lay.releases}
    for app in argocd.applications(REPO, env):
        if app.chart:
            assert app.value_files == releases[app.component].values_files, app.name
            values: dict = {}
            for f in app.value_files:
                values |= render.load_yaml_file(REPO, ROOT / f) or {}
            assert values == releases[app.component].values


def test_environments_differ_where_they_should() -> None:
    def release(env: str, name: str) -> flux.Release:
        return next(r for lay in flux.layers(REPO, env) for r in lay.releases if r.name == name)

    def autoscaler(env: str) -> dict[str, str]:
        (ks,) = [
            m
            for lay in flux.layers(REPO, env)
            for m in lay.manifests
            if m["kind"] == "KnativeServing"
        ]
        return ks["spec"]["config"]["autoscaler"], ks["spec"]["high-availability"]["replicas"]

    assert autoscaler("dev")[0]["enable-scale-to-zero"] == "true"
    assert autoscaler("prod")[0]["enable-scale-to-zero"] == "false"
    assert autoscaler("dev")[1] == 1 and autoscaler("prod")[1] >= 2
    assert release("dev", "istiod").values["pilot"]["replicaCount"] == 1
    assert release("prod", "istiod").values["pilot"]["autoscaleMin"] >= 2
    assert release("prod", "cert-manager").values["webhook"]["replicaCount"] >= 2
    apps = {env: argocd.applications(REPO, env) for env in ENVS}
    assert all(a.automated for a in apps["dev"]) and not any(a.automated for a in apps["prod"])


@pytest.mark.parametrize("env", ENVS)
def test_knative_tag_resolution_skips_a_per_environment_list(env: str) -> None:
    """Knative's default skip list reaches every environment's KnativeServing, merged with the
    environment's own deployment settings (prod's queue-proxy resources)."""
    (ks,) = [
        m for lay in flux.layers(REPO, env) for m in lay.manifests if m["kind"] == "KnativeServing"
    ]
    deployment = ks["spec"]["config"]["deployment"]
    skipped = deployment["registries-skipping-tag-resolving"].split(",")
    assert {"kind.local", "ko.local", "dev.local"} <= set(skipped), skipped
    assert all(r and r == r.strip() and "/" not in r for r in skipped), skipped
    if env == "prod":
        assert deployment["queue-sidecar-cpu-request"] == "250m"


def test_argo_sync_options_where_upstream_needs_them() -> None:
    apps = {a.component: a for a in argocd.applications(REPO, "dev")}
    assert "ServerSideApply=true" in apps["kserve-crd"].sync_options  # ~2 MB CRD
    for late in ("knative-serving", "kserve-runtime-configs", "sklearn-iris"):
        assert "SkipDryRunOnMissingResource=true" in apps[late].sync_options
    # Which fields are ignored, and that no other is, is tests/checks/test_drift.py's subject.
    ignored = {
        (d["kind"], p) for d in apps["istiod"].spec["ignoreDifferences"] for p in d["jsonPointers"]
    }
    assert ("ValidatingWebhookConfiguration", "/webhooks/0/failurePolicy") in ignored


def test_go_template_subset_renders_like_argo() -> None:
    text = '{{- if eq .kind "a" }}A {{ .x.y }}{{- else if eq .kind "b" }}B{{- else }}C{{- end }}'
    assert argocd.render_template(text, {"kind": "a", "x": {"y": 1}}, "t") == "A 1"
    assert argocd.render_template(text, {"kind": "b"}, "t") == "B"
    assert argocd.render_template(text, {"kind": "z"}, "t") == "C"
    assert argocd.render_template('{{ trimPrefix "./" .p }}', {"p": "./c"}, "t") == "c"
    with pytest.raises(render.RenderError, match="lacks"):
        argocd.render_template("{{ .missing }}", {}, "t")
    with pytest.raises(render.RenderError, match="unsupported"):
        argocd.render_template("{{ printf .x }}", {"x": 1}, "t")


BREAKAGES = {
    "flux dependsOn removed": (
        "clusters/base/platform-kserve.yaml",
        "  dependsOn:\n    - name: platform-configs\n",
        "",
        "staging: Flux: kserve-resources (step 0) must come after",
    ),
    "argo sync wave collapsed": (
        "argocd/base/applicationset.yaml",
        "wave: '5'",  # kserve-runtime-configs, one step after kserve-resources
        "wave: '4'",
        "Argo CD: kserve-runtime-configs (step 4) must come after kserve-resources (step 4)",
    ),
    # Argo CD ignores missing values files (ignoreMissingValueFiles): a wrong path shows as
    # values Argo CD no longer passes where Flux does.
    "argo shared values file path wrong": (
        "argocd/base/applicationset.yaml",
        "$values/platform/{{ .layer }}/values/{{ .name }}.yaml",
        "$values/platform/{{ .layer }}/values/{{ .name }}.yml",
        "dev: istio-base: values_files differs: Flux ('platform/crds/values/istio-base.yaml',), "
        "Argo CD ()",
    ),
    "argo environment values file path wrong": (
        "argocd/base/applicationset.yaml",
        "$values/environments/{{ .env }}/platform/{{ .layer }}/values/{{ .name }}.yaml",
        "$values/environments/{{ .env }}/platform/{{ .layer }}/values/{{ .name }}.yml",
        "prod: cert-manager: values_files differs: "
        "Flux ('environments/prod/platform/controllers/values/cert-manager.yaml',), Argo CD ()",
    ),
    "flux path missing": (
        "clusters/base/models.yaml",
        "path: ./environments/ENV/models",
        "path: ./environments/ENV/model",
        "spec.path environments/prod/model has no kustomization.yaml",
    ),
    "domain out of step": (
        "environments/staging/platform/configs/knative-serving.yaml",
        "staging.kserve.example.com",
        "stage.kserve.example.com",
        "staging: KnativeServing spec.config.domain ['stage.kserve.example.com']",
    ),
    "model values break the chart schema": (
        "environments/dev/models/sklearn-iris.yaml",
        "model:\n",
        "model:\n  notAChartValue: 1\n",
        "dev: Flux HelmRelease/sklearn-iris: values:",
    ),
    "argo element out of step with flux": (
        "argocd/base/applicationset.yaml",
        "chart: cni\n                  version: 1.30.3",
        "chart: cni\n                  version: 1.30.2",
        "istio-cni: version differs: Flux '1.30.3', Argo CD '1.30.2' "
        "(argocd/base/applicationset.yaml: element istio-cni)",
    ),
    "a model with values but no HelmRelease": (
        "environments/dev/models/kustomization.yaml",
        "resources:\n",
        "resources:\n",  # the edit is the new values file (see below)
        "'second-model'",
    ),
}
# Files a breakage adds: a second model is a values file (and a HelmRelease and an element).
ADDED = {"a model with values but no HelmRelease": "environments/dev/models/second-model.yaml"}


def check_platform(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """`kgops platform --check` against the checkout at `root`, in this process."""
    monkeypatch.chdir(root)
    code = platform_consistency.main(["--check"], Repo(root))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_the_check_fails_on_broken_input(
    case: str, repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file, old, new, expected = BREAKAGES[case]
    edit(repo_copy / file, old, new)
    if case in ADDED:
        model = repo_copy / "environments/dev/models/sklearn-iris.yaml"
        (repo_copy / ADDED[case]).write_text(model.read_text())
    code, out, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 1, out
    assert expected in err, err


@pytest.mark.parametrize(
    ("file", "old", "new", "field"),
    [
        (
            "clusters/base/platform-crds.yaml",
            "  prune: true\n",
            "  prune: true\n  pruning: all\n",
            "pruning",
        ),
        (
            "platform/kserve/kserve-resources.yaml",
            "  interval: 30m\n",
            "  interval: 30m\n  chartVersion: v0.20.0\n",
            "chartVersion",
        ),
        (
            "argocd/base/appproject.yaml",
            "  sourceRepos:\n",
            "  sourceRepo: []\n  sourceRepos:\n",
            "sourceRepo",
        ),
        (  # inside the ApplicationSet's template: caught on the generated Applications
            "argocd/base/applicationset.yaml",
            "      project: kserve-platform\n",
            "      project: kserve-platform\n      syncWindow: nightly\n",
            "syncWindow",
        ),
    ],
)
def test_validate_names_file_and_unknown_field(
    file: str, old: str, new: str, field: str, repo_copy: Path, kgops
) -> None:
    edit(repo_copy / file, old, new)
    proc = kgops("validate", "-q", root=repo_copy)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert any(field in line and Path(file).parent.name in line for line in out.splitlines()), out


def test_a_second_model_is_data_not_python(
    repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model is files: one HelmRelease in the shared base, its values per environment, a
    kustomization line or two, an ApplicationSet element. The checks and the render take it up
    with no code change."""
    base = repo_copy / "environments" / "base" / "models"
    release = (base / "helmrelease-sklearn-iris.yaml").read_text()
    (base / "helmrelease-iris-b.yaml").write_text(release.replace("sklearn-iris", "iris-b"))
    edit(
        base / "kustomization.yaml",
        "  - helmrelease-sklearn-iris.yaml\n",
        "  - helmrelease-sklearn-iris.yaml\n  - helmrelease-iris-b.yaml\n",
    )
    for env in ENVS:
        models = repo_copy / "environments" / env / "models"
        values = (models / "sklearn-iris.yaml").read_text()
        (models / "iris-b.yaml").write_text(values.replace("fullnameOverride: sklearn-iris", ""))
        edit(
            models / "kustomization.yaml",
            "configMapGenerator:\n",
            "configMapGenerator:\n  - name: iris-b-values\n    namespace: flux-system\n"
            "    files:\n      - values.yaml=iris-b.yaml\n",
        )
    appset = repo_copy / "argocd/base/applicationset.yaml"
    text = appset.read_text()
    start = text.index("                - name: sklearn-iris\n")
    end = text.index("                  ignoreDifferences: []\n", start)
    element = text[start:end] + "                  ignoreDifferences: []\n"
    appset.write_text(text.replace(element, element + element.replace("sklearn-iris", "iris-b")))
    code, _, err = check_platform(repo_copy, capsys, monkeypatch)
    assert code == 0, err
    for env in ENVS:
        isvcs = [
            o.name
            for o in render.environment_objects(Repo(repo_copy), env)
            if o.kind == "InferenceService"
        ]
        assert isvcs == ["iris-b", "sklearn-iris"], (env, isvcs)
        flux_models = {r.name for lay in flux.layers(Repo(repo_copy), env) for r in lay.releases}
        argo_models = {a.component for a in argocd.applications(Repo(repo_copy), env)}
        assert {"iris-b", "sklearn-iris"} <= flux_models & argo_models, env
