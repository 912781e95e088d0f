"""The CRD cache: upstream CRDs at pinned versions, sha256-checked, from a local folder
(CRD_DIR) or downloaded from the pinned URLs. `make crds` fills it; validation reads it.

A pin with a `gomodule` column (Flux's controllers) that CRD_DIR does not hold is read from
that Go module at the pinned tag (`go mod download`, the module proxy): the controllers the
Flux e2e builds come from the same modules."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kserve_gitops.base import pinned
from kserve_gitops.repo import Repo, files
from kserve_gitops.upstream import tables


class CRDError(Exception):
    """A CRD that is missing, unreadable or not the pinned bytes."""


@dataclass(frozen=True)
class Pin:
    file: str
    upstream: str
    tag: str
    sha256: str
    url: str
    path: str = ""  # in the upstream repository (and Go module)
    gomodule: str = ""  # the Go module holding `path` at `tag`, if any


def pin_file(repo: Repo) -> Path:
    return repo.config / "crds.tsv"


def cache_dir(repo: Repo) -> Path:
    return repo.cache / "crds"


def pins(repo: Repo, path: Path | None = None) -> list[Pin]:
    """The CRD pins of config/crds.tsv (or of `path`)."""
    columns = ("file", "upstream", "tag", "sha256", "url")
    rows = tables.read_tsv(repo, path or pin_file(repo), columns, CRDError, "CRD pin list")
    return [
        Pin(
            r["file"],
            r["upstream"],
            r["tag"],
            r["sha256"].lower(),
            r["url"],
            r.get("path") or "",
            r.get("gomodule") or "",
        )
        for r in rows
    ]


def _from_module(pin: Pin) -> tuple[bytes, str]:
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{pin.gomodule}@{pin.tag}"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {"Error": proc.stderr.strip()}
    if "Dir" not in info:
        raise CRDError(
            f"{pin.gomodule}@{pin.tag}: {pin.file} not in CRD_DIR, nor from the Go "
            f"module proxy: {info.get('Error') or proc.stderr.strip()}"
        )
    src = Path(info["Dir"]) / pin.path
    return src.read_bytes(), f"{pin.gomodule}@{pin.tag}/{pin.path}"


def _check(pin: Pin, data: bytes, origin: str) -> bytes:
    where = f"{pin.upstream} {pin.tag} (config/crds.tsv)"
    return pinned.verify(data, pin.sha256, origin, pin.file, where, CRDError)


def _fetch(pin: Pin) -> tuple[bytes, str]:
    """The pinned bytes from CRD_DIR when set (a Go module's file CRD_DIR lacks from the
    module), else from the pinned URL."""
    crd_dir = os.environ.get("CRD_DIR")
    if crd_dir and pin.gomodule and not (Path(crd_dir) / pin.file).is_file():
        return _from_module(pin)
    return pinned.fetch(pin.file, pin.url, "CRD_DIR", "the pinned CRDs", CRDError)


def ensure(
    repo: Repo, cache: Path | None = None, pin_path: Path | None = None, quiet: bool = True
) -> list[Path]:
    """Every pinned CRD in the cache, fetched when absent; each one's sha256 checked."""
    cached: list[Path] = []
    for pin in pins(repo, pin_path):
        dest = (cache or cache_dir(repo)) / pin.file
        if dest.is_file():
            _check(pin, dest.read_bytes(), repo.rel(dest))
        else:
            data, origin = _fetch(pin)
            files.write_bytes(dest, _check(pin, data, origin))
            if not quiet:
                print(f"fetched {pin.file} ({pin.upstream} {pin.tag}) from {origin}")
        cached.append(dest)
    return cached


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    argparse.ArgumentParser(
        description="Fill the CRD cache from CRD_DIR or the pinned URLs, sha256-checked."
    ).parse_args(argv)
    repo = repo or Repo.discover()
    try:
        cached = ensure(repo, quiet=False)
    except CRDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(cached)} CRD files pinned and verified in {repo.rel(cache_dir(repo))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
