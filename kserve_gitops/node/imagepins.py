"""Which images the real node runs, at the pins of versions.yaml, and where each archive is
cached: the names, references and cache keys that the builders (imagebuild.py) and the cache's
commands (images.py) share.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.base.pinned import user_cache
from kserve_gitops.localcluster.binaries import BuildError, go_version, pin_error
from kserve_gitops.repo import Repo

ENV_CACHE = "KGOPS_IMAGE_CACHE"
# Knative resolves no tag to a digest for these registries (config-deployment
# registries-skipping-tag-resolving: kind.local, ko.local, dev.local), so nothing is pulled.
REGISTRY = "dev.local/kserve-gitops"
ARCHIVE = "image.oci.tar"
KNATIVE_COMMANDS = ("queue", "activator", "autoscaler", "controller", "webhook")


def cache_root() -> Path:
    """Outside the checkout, beside the binaries' cache: $KGOPS_IMAGE_CACHE, else the user's
    cache directory (kserve-gitops/images)."""
    return user_cache("images", ENV_CACHE)


@dataclass(frozen=True)
class Image:
    """One image: `kind` says how it is built; `build` is the part of its cache key that is
    not its version (the Go version of its binary, the compiler, the base and uv)."""

    name: str
    version: str
    kind: str  # "pause" | "sklearnserver" | "knative"
    build: str

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/{self.name}:{self.version}"

    @property
    def path(self) -> Path:
        return cache_root() / self.name / self.version / self.build / ARCHIVE


def _pin(repo: Repo, versions: dict, dotted: str) -> str:
    value: Any = versions
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not value:
        raise pin_error(repo, dotted)
    return str(value)


def gcc_version() -> str:
    """`gcc12`: the compiler's major version, part of the pause image's cache key."""
    if shutil.which("gcc") is None:
        raise BuildError("gcc: not on PATH; the pause image is compiled from C (`make images`)")
    out = subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True, check=True)
    return f"gcc{out.stdout.strip()}"


def pinned(repo: Repo, versions: dict | None = None) -> list[Image]:
    """The images at the versions of versions.yaml (the platform's pins; `versions` in its
    place)."""
    versions = versions or repo.versions
    kube = _pin(repo, versions, "kubernetes.version")
    kserve = _pin(repo, versions, "kserve.version")
    serving = _pin(repo, versions, "localCluster.knativeServing")
    suite = _pin(repo, versions, "images.debian.suite")
    uv = _pin(repo, versions, "images.uv")
    gover = go_version()
    return [
        Image("pause", f"v{kube}", "pause", gcc_version()),
        Image("sklearnserver", kserve, "sklearnserver", f"{suite}-uv{uv}"),
        *(Image(f"knative-serving-{cmd}", serving, "knative", gover) for cmd in KNATIVE_COMMANDS),
        Image("coredns", _pin(repo, versions, "node.coredns"), "coredns", gover),
    ]
