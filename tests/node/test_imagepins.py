"""The real node's images at the pins of versions.yaml, and where their archives are cached
(kserve_gitops.node.imagepins)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node import imagepins
from tests import REPO


@functools.cache
def default_cache() -> dict[str, imagepins.Image]:
    """The pinned images by name; their archives are looked up in the cache of the moment
    (the tests of the built images do not use the `cache` fixture)."""
    return {image.name: image for image in imagepins.pinned(REPO)}


def test_pins_come_from_versions_yaml() -> None:
    versions = REPO.versions
    pinned = {image.name: image for image in imagepins.pinned(REPO, versions)}
    assert set(pinned) == {
        "pause",
        "sklearnserver",
        *(f"knative-serving-{c}" for c in ("queue", "activator", "autoscaler", "controller")),
        "knative-serving-webhook",
        "coredns",
    }
    assert (
        pinned["pause"].ref == f"dev.local/kserve-gitops/pause:v{versions['kubernetes']['version']}"
    )
    assert pinned["sklearnserver"].version == versions["kserve"]["version"]
    assert pinned["sklearnserver"].build.endswith(f"uv{versions['images']['uv']}")
    queue = pinned["knative-serving-queue"]
    serving = versions["localCluster"]["knativeServing"]
    assert queue.ref == f"dev.local/kserve-gitops/knative-serving-queue:{serving}"
    # Knative skips tag-to-digest resolution only for these registries: nothing is pulled.
    assert all(
        i.ref.split("/")[0] in {"dev.local", "kind.local", "ko.local"} for i in pinned.values()
    )


def test_a_missing_pin_names_the_field() -> None:
    versions = REPO.versions
    broken = {**versions, "images": {**versions["images"], "uv": ""}}
    with pytest.raises(BuildError, match=r"versions.yaml: images.uv: no version"):
        imagepins.pinned(REPO, broken)


def test_cache_follows_the_environment(cache: Path) -> None:
    assert imagepins.cache_root() == cache
    image = imagepins.pinned(REPO)[0]
    assert image.path == cache / image.name / image.version / image.build / imagepins.ARCHIVE
