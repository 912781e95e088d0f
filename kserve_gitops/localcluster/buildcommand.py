"""The binaries of the local (kwok) cluster, built from Go modules at the versions in
versions.yaml and cached by component, version and Go version, so that a second run (or CI in a
fresh clone on the same machine) builds nothing.

    kgops binaries          # build what is missing (make binaries)
    kgops binaries --list   # where each binary is, built or not

The command and the body it shares with `kgops controllers` and `kgops node-binaries` (build what
is missing, then list the cache), above the builds themselves (binaries.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kserve_gitops.localcluster.binaries import (
    Binary,
    BuildError,
    build,
    ensure,
    flux_pinned,
    go_version,
    oci_registry,
    pinned,
    secret_scanner,
)
from kserve_gitops.localcluster.bincache import cache_root
from kserve_gitops.repo import Repo


def build_command(
    todo: Callable[[], list[Any]],
    build_one: Callable[[Any, str], Path],
    list_only: bool,
    what: str,
    after: Callable[[], list[str]] = list,
) -> int:
    """The body of `kgops binaries` and `kgops controllers`: build what is missing (unless
    `list_only`), then a line per binary with its state and path, then the lines of `after`;
    1 with the message on a BuildError (a missing pin, a failed build)."""
    try:
        binaries = todo()
        gover = go_version()
        if not list_only:
            started = time.monotonic()
            ensure(binaries, build_one=build_one)
            print(f"{what} ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
        for binary in binaries:
            path = binary.path(gover)
            state = "built" if path.is_file() else "missing"
            print(f"{binary.name:<26} {binary.version:<9} {state:<8} {path}")
        for line in after():
            print(line)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the cache, build nothing")
    parser.add_argument(
        "--flux",
        action="store_true",
        help="also Flux's controllers and the OCI registry (make e2e DELIVERY=flux)",
    )
    parser.add_argument(
        "--scanner",
        action="store_true",
        help="only gitleaks, the credential scan of make policy and the e2e (make gitleaks)",
    )
    args = parser.parse_args(argv)

    def todo() -> list[Binary]:
        if args.scanner:
            return [secret_scanner(repo)]
        flux = [*flux_pinned(repo), oci_registry(repo)] if args.flux else []
        return [*pinned(repo), *flux, secret_scanner(repo)]

    return build_command(
        todo,
        build,
        args.list,
        "binaries",
        lambda: [f"cache {cache_root()}: {_size(cache_root()) / 2**20:.0f} MiB"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
