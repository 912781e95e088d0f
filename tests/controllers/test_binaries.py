"""The controllers' pins: from versions.yaml, consistent with the Knative release."""

from __future__ import annotations

import pytest

from kserve_gitops.controllers import binaries
from kserve_gitops.localcluster.binaries import BuildError
from tests import REPO


def test_pins_come_from_versions_yaml() -> None:
    versions = REPO.versions
    pinned = {c.name: c for c in binaries.pinned(REPO, versions)}
    assert pinned["knative-operator"].version == versions["localCluster"]["knativeOperator"]
    assert pinned["knative-serving-webhook"].package == "knative.dev/serving/cmd/webhook"
    assert pinned["kserve-manager"].version == versions["kserve"]["version"]
    assert pinned["kserve-manager"].main_module  # replace/exclude only apply to a main module


def test_knative_module_tag_matches_the_serving_release() -> None:
    """Knative's Go modules are tagged v0.<minor + 27>.<patch> for release 1.<minor>.<patch>."""
    versions = REPO.versions
    major, minor, patch = str(versions["knative"]["serving"]).split(".")
    assert major == "1"
    expected = f"v0.{int(minor) + 27}.{patch}"
    assert versions["localCluster"]["knativeServing"] == expected
    assert versions["localCluster"]["knativeOperator"] == expected


def test_a_missing_pin_names_the_field() -> None:
    versions = REPO.versions
    broken = {**versions, "localCluster": {**versions["localCluster"], "knativeServing": ""}}
    with pytest.raises(BuildError, match=r"versions.yaml: localCluster.knativeServing: no version"):
        binaries.pinned(REPO, broken)
