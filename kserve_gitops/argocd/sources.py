"""The Lua health checks of Argo CD at the pinned version, in a cache keyed by version
(~/.cache/kserve-gitops/argocd-health/<tag>/<group>/<Kind>/): from the folder ARGOCD_HEALTH_DIR
(laid out <tag>/<group>/<Kind>/, like ../shared/argocd-health) or downloaded from the pinned
URLs, every file checked against the sha256 of config/argocd-health.tsv. A version's folder
appears whole or not at all."""

from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kserve_gitops.base import pinned
from kserve_gitops.repo import Repo

COLUMNS = ("file", "tag", "sha256", "url")


class HealthSourceError(Exception):
    """A pinned health check that is missing, unreadable or not the pinned bytes."""


@dataclass(frozen=True)
class Pin:
    file: str  # <tag>/<group>/<Kind>/...
    tag: str
    sha256: str
    url: str


def pin_file(repo: Repo) -> Path:
    return repo.config / "argocd-health.tsv"


def version(repo: Repo) -> str:
    """`argocd.version` of versions.yaml, e.g. "v3.5.1"."""
    return repo.version_of("argocd")


def cache_root() -> Path:
    return pinned.user_cache("argocd-health")


def pins(repo: Repo) -> list[Pin]:
    """The rows of config/argocd-health.tsv; each must be at the version versions.yaml pins."""
    path, tag = pin_file(repo), version(repo)
    where = repo.rel(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise HealthSourceError(f"{where}: cannot read ({exc.strerror})") from None
    out = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if not row.get(c)]
        if missing:
            raise HealthSourceError(f"{where}:{line}: missing column(s) {', '.join(missing)}")
        if row["tag"] != tag or not row["file"].startswith(f"{tag}/"):
            raise HealthSourceError(
                f"{where}:{line}: {row['file']}: tag {row['tag']}, but versions.yaml "
                f"argocd.version is {tag}: update its file, tag, path, URL and sha256"
            )
        out.append(Pin(row["file"], row["tag"], row["sha256"].lower(), row["url"]))
    return out


def _check(pin: Pin, data: bytes, origin: str, where: str) -> bytes:
    pin_column = f"{where} column sha256"
    return pinned.verify(data, pin.sha256, origin, pin.file, pin_column, HealthSourceError)


def ensure(repo: Repo, cache: Path | None = None) -> Path:
    """The verified cache folder of the pinned version (<cache>/<tag>), filled when absent."""
    root = cache or cache_root()
    where = repo.rel(pin_file(repo))
    wanted = pins(repo)
    dest = root / version(repo)
    if dest.is_dir():
        for pin in wanted:
            path = root / pin.file
            if not path.is_file():
                raise HealthSourceError(
                    f"{path}: {pin.file} missing from the cache (pinned in {where}); remove "
                    f"{dest} and run again"
                )
            _check(pin, path.read_bytes(), str(path), where)
        return dest
    # Everything read and checked before anything is written.
    fetched = {
        pin.file: _check(
            pin,
            *pinned.fetch(
                pin.file,
                pin.url,
                "ARGOCD_HEALTH_DIR",
                "the pinned health checks",
                HealthSourceError,
            ),
            where,
        )
        for pin in wanted
    }
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{dest.name}."))
    try:
        for file, data in fetched.items():
            path = staging / Path(file).relative_to(dest.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            staging.rename(dest)
        except OSError:
            if not dest.is_dir():  # else another process filled it first: same bytes
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
