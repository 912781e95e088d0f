"""The CRD cache: upstream CRDs at pinned versions, sha256-checked, from a local folder
(CRD_DIR) or downloaded from the pinned URLs. `make crds` fills it; validation reads it."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kserve_gitops import files, paths
from kserve_gitops.upstream import tables

PINS = paths.CONFIG / "crds.tsv"
CACHE_DIR = paths.CACHE / "crds"


class CRDError(Exception):
    """A CRD that is missing, unreadable or not the pinned bytes."""


@dataclass(frozen=True)
class Pin:
    file: str
    upstream: str
    tag: str
    sha256: str
    url: str


def pins(pin_file: Path = PINS) -> list[Pin]:
    columns = ("file", "upstream", "tag", "sha256", "url")
    rows = tables.read_tsv(pin_file, columns, CRDError, "CRD pin list")
    return [Pin(r["file"], r["upstream"], r["tag"], r["sha256"].lower(), r["url"]) for r in rows]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(pin: Pin, data: bytes, origin: str) -> bytes:
    got = _sha256(data)
    if got != pin.sha256:
        raise CRDError(
            f"{origin}: sha256 mismatch for {pin.file} ({pin.upstream} {pin.tag}): "
            f"expected {pin.sha256}, got {got}"
        )
    return data


def _fetch(pin: Pin) -> tuple[bytes, str]:
    """The pinned bytes from CRD_DIR when set, else from the pinned URL."""
    crd_dir = os.environ.get("CRD_DIR")
    if crd_dir:
        src = Path(crd_dir) / pin.file
        try:
            return src.read_bytes(), str(src)
        except OSError as exc:
            raise CRDError(f"{src}: cannot read {pin.file} from CRD_DIR ({exc.strerror})") from exc
    try:
        with urllib.request.urlopen(pin.url, timeout=60) as resp:
            return resp.read(), pin.url
    except OSError as exc:
        raise CRDError(
            f"{pin.url}: download of {pin.file} failed ({exc}); offline, set CRD_DIR to a folder "
            "holding the pinned CRDs"
        ) from exc


def ensure(cache_dir: Path = CACHE_DIR, pin_file: Path = PINS, quiet: bool = True) -> list[Path]:
    """Every pinned CRD in the cache, fetched when absent; each one's sha256 checked."""
    cached: list[Path] = []
    for pin in pins(pin_file):
        dest = cache_dir / pin.file
        if dest.is_file():
            _check(pin, dest.read_bytes(), paths.rel(dest))
        else:
            data, origin = _fetch(pin)
            files.write_bytes(dest, _check(pin, data, origin))
            if not quiet:
                print(f"fetched {pin.file} ({pin.upstream} {pin.tag}) from {origin}")
        cached.append(dest)
    return cached


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        description="Fill the CRD cache from CRD_DIR or the pinned URLs, sha256-checked."
    ).parse_args(argv)
    try:
        files = ensure(quiet=False)
    except CRDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(files)} CRD files pinned and verified in {paths.rel(CACHE_DIR)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
