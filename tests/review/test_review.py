"""`make diff BASE=<ref>`: the rendered difference per environment between a Git revision and
the working tree, on a throwaway Git repository copied from this one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from kserve_gitops.repo import diff
from tests import REPO
from tests.broken_copy import edit
from tests.conftest import Kgops


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.fixture
def git_repo(repo_copy: Path) -> Path:
    """The copy as a Git repository with one commit on `main` and a feature branch checked out."""
    _git(repo_copy, "init", "-q", "-b", "main")
    _git(repo_copy, "add", "-A")
    _git(repo_copy, "commit", "-q", "-m", "base")
    _git(repo_copy, "switch", "-q", "-c", "feature")
    return repo_copy


def _sections(stdout: str) -> dict[str, str]:
    """`== <env>: ...` sections of the text report."""
    parts = re.split(r"^== (\w+): ", stdout, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _change(repo: Path) -> None:
    """A values change (prod), an added object (every environment), a removed object (dev)."""
    edit(repo / "environments/prod/models/sklearn-iris.yaml", "maxReplicas: 10", "maxReplicas: 12")
    (repo / "platform/configs/review-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: review-probe\n"
        "  namespace: knative-serving\ndata:\n  purpose: test\n"
    )
    edit(
        repo / "platform/configs/kustomization.yaml",
        "  - namespace.yaml\n",
        "  - namespace.yaml\n  - review-probe.yaml\n",
    )
    edit(
        repo / "environments/dev/platform/monitoring/kustomization.yaml", "  - dashboard.yaml\n", ""
    )


def test_a_committed_change_is_named_per_environment(git_repo: Path, kgops: Kgops) -> None:
    _change(git_repo)
    _git(git_repo, "add", "-A")
    _git(git_repo, "commit", "-q", "-m", "change")
    # Default base: the merge base with main, i.e. the first commit.
    proc = kgops("diff", root=git_repo)
    assert proc.returncode == 1, proc.stderr
    assert "merge base with main" in proc.stdout
    envs = _sections(proc.stdout)
    assert sorted(envs) == ["dev", "prod", "staging"]
    for env, section in envs.items():
        assert "+ ConfigMap knative-serving/review-probe\n" in section, env
        assert "+   data:\n+     purpose: test\n" in section  # an added object's YAML
    # The values change: in the values ConfigMap and in the rendered InferenceService, field-level.
    prod = envs["prod"]
    assert prod.startswith("2 changed, 1 added, 0 removed")
    assert "~ InferenceService models/sklearn-iris\n" in prod
    assert "-    spec.predictor.maxReplicas: 10\n+    spec.predictor.maxReplicas: 12\n" in prod
    assert '+    data["values.yaml"].predictor.maxReplicas: 12' in prod
    assert "sklearn-iris" not in envs["staging"] and "sklearn-iris" not in envs["dev"]
    dev = envs["dev"]
    assert dev.startswith("0 changed, 1 added, 1 removed")
    assert "- ConfigMap kserve-monitoring/kserve-slo-dashboard\n" in dev
    assert "kserve-slo-dashboard" not in envs["staging"] + prod
    assert proc.stdout.rstrip().endswith(
        "3 of 3 environments change (dev, prod, staging): 2 changed, 3 added, 1 removed"
    )

    md = kgops("diff", "--base", "main", "--format", "markdown", root=git_repo)
    assert md.returncode == 1, md.stderr
    first = md.stdout.splitlines()[0]
    assert (
        first
        == "**3 of 3 environments change (dev, prod, staging): 2 changed, 3 added, 1 removed**"
    )
    assert md.stdout.count("<details><summary>") == 3 and md.stdout.count("</details>") == 3
    assert "<details><summary>prod: 2 changed, 1 added, 0 removed</summary>" in md.stdout
    assert "```diff\n" in md.stdout


def test_a_change_that_renders_the_same_reports_no_difference(git_repo: Path, kgops: Kgops) -> None:
    # A comment and a reordered key in a values file: Flux gets a new ConfigMap name, but no
    # rendered object changes.
    values = git_repo / "environments/staging/models/sklearn-iris.yaml"
    text = values.read_text().replace("fullnameOverride: sklearn-iris\n", "", 1)
    values.write_text(f"# reviewed: no functional change\n{text}fullnameOverride: sklearn-iris\n")
    _git(git_repo, "commit", "-q", "-am", "comment only")
    proc = kgops("diff", "--base", "HEAD~1", root=git_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no rendered object changes in any environment (dev, prod, staging)" in proc.stdout
    md = kgops("diff", "--base", "HEAD~1", "--format", "markdown", root=git_repo)
    assert md.returncode == 0
    assert md.stdout.startswith("**no rendered object changes in any environment")
    assert "<details><summary>staging: no change</summary>" in md.stdout


def test_uncommitted_changes_are_compared_and_the_tree_is_left_alone(
    git_repo: Path, kgops: Kgops
) -> None:
    _change(git_repo)
    before = _git(git_repo, "status", "--porcelain")
    proc = kgops("diff", "--base", "HEAD", root=git_repo)
    assert proc.returncode == 1, proc.stderr
    assert "+ ConfigMap knative-serving/review-probe" in proc.stdout
    assert _git(git_repo, "status", "--porcelain") == before
    assert _git(git_repo, "worktree", "list").count("\n") == 1


def test_an_unknown_or_broken_base_is_an_error(git_repo: Path, kgops: Kgops) -> None:
    proc = kgops("diff", "--base", "no-such-ref", root=git_repo)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--base no-such-ref: not a commit" in proc.stderr
    # A base whose manifests do not render is named, with the file, and nothing is printed.
    kustomization = git_repo / "platform/configs/kustomization.yaml"
    good = kustomization.read_text()
    kustomization.write_text(good.replace("  - namespace.yaml\n", "  - missing.yaml\n"))
    _git(git_repo, "commit", "-q", "-am", "broken")
    kustomization.write_text(good)
    proc = kgops("diff", "--base", "HEAD", root=git_repo)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert "base revision HEAD (" in proc.stderr and "platform/configs" in proc.stderr


def test_upstream_charts_render_with_our_values(
    git_repo: Path, kgops: Kgops, shared_charts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    edit(
        git_repo / "environments/staging/platform/controllers/values/istiod.yaml",
        "replicaCount: 1",
        "replicaCount: 3",
    )
    proc = kgops("diff", "--base", "HEAD", root=git_repo)
    assert proc.returncode == 1, proc.stderr
    staging = _sections(proc.stdout)["staging"]
    assert "~ Deployment istio-system/istiod\n" in staging
    assert "-    spec.replicas: 1\n+    spec.replicas: 3\n" in staging
    assert "not in the chart cache" not in proc.stdout


# The object diff itself, on small inputs.


def test_named_list_items_are_matched_by_name_and_insertions_align() -> None:
    a = {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}
    b = {"spec": {"containers": [{"name": "b", "image": "y:2"}, {"name": "a", "image": "x:1"}]}}
    assert diff.field_changes(a, b) == [
        diff.FieldChange("spec.containers[name=b].image", "y:1", "y:2")
    ]
    got = diff.field_changes({"args": ["--a", "--c"]}, {"args": ["--a", "--b", "--c"]})
    assert got == [diff.FieldChange("args[1]", diff.MISSING, "--b")]


def test_generated_name_hashes_and_embedded_yaml_layout_are_noise() -> None:
    def objs(suffix: str, values: str) -> list[dict]:
        cm = {"kind": "ConfigMap", "metadata": {"name": f"v-{suffix}", "namespace": "f"}}
        hr = {"kind": "HelmRelease", "metadata": {"name": "r", "namespace": "f"}}
        hr["spec"] = {"valuesFrom": [{"name": f"v-{suffix}"}]}
        return [{**cm, "data": {"values.yaml": values}}, hr]

    same = diff.compare(objs("6gb2k26hg5", "a: 1\nb: 2\n"), objs("mt9dh8c7b4", "# c\nb: 2\na: 1\n"))
    assert same == []
    changed = diff.compare(objs("6gb2k26hg5", "a: 1\nb: 2\n"), objs("mt9dh8c7b4", "a: 1\nb: 3\n"))
    assert [(c.key, c.status) for c in changed] == [("ConfigMap f/v", "changed")]
    assert changed[0].fields == (diff.FieldChange('data["values.yaml"].b', 2, 3),)
    # A name that merely looks like a suffix is kept: "controller" is not a kustomize hash.
    assert "ConfigMap kserve-controller" in diff.normalise(
        [{"kind": "ConfigMap", "metadata": {"name": "kserve-controller"}}]
    )


def test_pull_requests_get_the_diff_as_job_summary() -> None:
    workflow = yaml.safe_load((REPO.root / ".github/workflows/ci.yml").read_text())
    job = workflow["jobs"]["rendered-diff"]
    assert job["if"] == "github.event_name == 'pull_request'"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    run = next(s["run"] for s in job["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert "kgops diff --base" in run and "--format markdown" in run
    # The same module and flags as `make diff BASE= FORMAT=markdown`.
    makefile = (REPO.root / "Makefile").read_text()
    assert "$(KGOPS) diff $(if $(BASE),--base $(BASE)) --format $(FORMAT)" in makefile
