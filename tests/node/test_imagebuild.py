"""The images `make images` built (kserve_gitops.node.imagebuild), read from the cache
(KGOPS_IMAGE_CACHE, else ~/.cache/kserve-gitops/images): an image that is not there is skipped,
since building them takes root (mmdebstrap, chroot) and minutes, which the offline suite must not
spend."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from kserve_gitops.node import imagepins, oci
from tests import REPO
from tests.node.test_imagepins import default_cache


def built(name: str) -> oci.Archive:
    """The archive of `name` in the cache, read once per session: every layer hashed and
    listed, except the runtime's (650 MB of tar; containerd's import hashes it)."""
    image = default_cache()[name]
    if not image.path.is_file():
        pytest.skip(f"{image.ref} not built here ({image.path}): `make images` builds it (root)")
    return _read(image.path, name != "sklearnserver")


@functools.cache
def _read(path: Path, layers: bool) -> oci.Archive:
    return oci.inspect(path, list_layers=layers, layers=layers)


def test_the_pause_image() -> None:
    archive = built("pause")
    assert archive.ref == default_cache()["pause"].ref
    assert archive.config["config"]["User"] == "65535:65535"
    assert archive.config["config"]["Entrypoint"] == ["/pause"]
    assert archive.layer_names == [["pause"]]


@pytest.mark.parametrize("cmd", imagepins.KNATIVE_COMMANDS)
def test_the_knative_images(cmd: str) -> None:
    archive = built(f"knative-serving-{cmd}")
    config = archive.config["config"]
    assert config["User"] == "65532"
    assert config["Entrypoint"] == [f"/ko-app/{cmd}"]
    assert "KO_DATA_PATH=/var/run/ko" in config["Env"]
    base, app = archive.layer_names
    assert {"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt", "tmp"} <= set(base)
    assert f"ko-app/{cmd}" in app and "var/run/ko" in app


def test_the_knative_images_share_their_base() -> None:
    digests = {
        built(f"knative-serving-{cmd}").manifest["layers"][0]["digest"]
        for cmd in imagepins.KNATIVE_COMMANDS
    }
    assert len(digests) == 1


def test_the_sklearnserver_image() -> None:
    archive = built("sklearnserver")
    config = archive.config["config"]
    # KServe's python/sklearn.Dockerfile: USER 1000, ENTRYPOINT, PYTHONPATH, the venv first.
    assert config["User"] == "1000"
    assert config["Entrypoint"] == ["python", "-m", "sklearnserver"]
    assert "PYTHONPATH=/sklearnserver" in config["Env"]
    assert any(e.startswith("PATH=/prod_venv/bin:") for e in config["Env"])
    want = REPO.versions["kserve"]["sklearnServer"]["scikitLearn"]
    assert config["Labels"]["dev.kserve-gitops.scikit-learn"] == want
