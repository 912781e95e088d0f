"""The model registry agrees with every version's metadata and artifact and with what each
environment's values file serves; disagreements are reported naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kserve_gitops.lifecycle import registry, train
from tests import REPO
from tests.broken_copy import edit

MODEL_DIR = Path("models") / "sklearn-iris"


def test_committed_registry_is_consistent(kgops) -> None:
    reg = registry.load(REPO, "sklearn-iris")
    assert registry.check(reg) == []
    assert registry.sync(reg) == reg.text  # `--sync` would change nothing
    proc = kgops("registry", "--check")
    assert proc.returncode == 0, proc.stderr


def test_versions_carry_artifact_digest_and_metrics() -> None:
    reg = registry.load(REPO, "sklearn-iris")
    versions = reg.versions()
    assert list(versions) == ["v1", "v2"]
    for name, version in versions.items():
        meta = json.loads((REPO.models / "sklearn-iris" / name / train.METADATA).read_text())
        assert version.sha256 == train.sha256_file(version.artifact) == meta["sha256"]
        assert version.accuracy == meta["accuracy"] and version.test_rows == 30
    assert versions["v2"].accuracy > versions["v1"].accuracy
    assert reg.storage_uri("v2") == "pvc://sklearn-iris-models/v2"


def test_serving_state_is_derived_from_the_values_files() -> None:
    reg = registry.load(REPO, "sklearn-iris")
    for env in ("dev", "staging", "prod"):
        st = registry.state(reg, env)
        values = yaml.safe_load(st.values_path.read_text())
        assert reg.storage_uri(st.latest) == values["model"]["storageUri"]
        assert (st.stable, st.canary, st.phase) == ("v1", None, "stable")


def test_table_lists_versions_and_environments(kgops) -> None:
    proc = kgops("registry")
    assert proc.returncode == 0
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["v2", "1.0000", "03082e5324c7", "sklearn.neighbors.KNeighborsClassifier"] in rows
    assert ["prod", "v1", "v1", "100%"] in rows


def test_check_reports_each_disagreement(repo_copy: Path, kgops) -> None:
    reg = repo_copy / MODEL_DIR / "registry.yaml"
    edit(reg, "sha256: 03082e53", "sha256: 0aaffa48")
    edit(reg, "accuracy: 0.966667", "accuracy: 0.99")
    staging = repo_copy / "environments" / "staging" / "models" / "sklearn-iris.yaml"
    edit(staging, "sklearn-iris-models/v1", "sklearn-iris-models/v2")  # no canary, no promote
    proc = kgops("registry", "--check", root=repo_copy)
    assert proc.returncode == 1
    err = proc.stderr
    assert (
        "models/sklearn-iris/registry.yaml: versions.v2.sha256 does not match the artifact" in err
    )
    assert "versions.v1.accuracy is 0.99, metadata.json says 0.966667 (--sync)" in err
    assert (
        "environments/staging/models/sklearn-iris.yaml: model.storageUri serves v2 with no "
        "predictor.canaryTrafficPercent, but models/sklearn-iris/registry.yaml "
        "environments.staging.stable is v1"
    ) in err


def test_unregistered_storage_uri_is_named(repo_copy: Path, kgops) -> None:
    prod = repo_copy / "environments" / "prod" / "models" / "sklearn-iris.yaml"
    edit(prod, "pvc://sklearn-iris-models/v1", "pvc://other-models/v1")
    proc = kgops("registry", "--check", root=repo_copy)
    assert proc.returncode == 1
    assert (
        "environments/prod/models/sklearn-iris.yaml: model.storageUri 'pvc://other-models/v1' "
        "is not a registered version"
    ) in proc.stderr


def test_sync_adds_a_trained_version_keeping_comments(repo_copy: Path, kgops) -> None:
    reg = repo_copy / MODEL_DIR / "registry.yaml"
    before = reg.read_text()
    head, rest = before.split("  v2:\n")
    reg.write_text(head + "environments:" + rest.split("environments:")[1])  # v2 unregistered
    assert "v2:" not in reg.read_text()
    check = kgops("registry", "--check", root=repo_copy)
    assert "versions.v2: in train.yaml but not registered (--sync)" in check.stderr
    proc = kgops("registry", "--sync", root=repo_copy)
    assert proc.returncode == 0, proc.stderr
    assert "+  v2:" in proc.stdout
    assert reg.read_text() == before
