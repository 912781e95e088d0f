"""The container images of the real node, built here from the pinned sources and never pulled:
each an OCI image archive (`ctr images import` reads it), cached by name and version outside the
checkout, so that a second run builds nothing.

    kgops images                       # build what is missing (make images)
    kgops images --list                # each image's reference, state and archive
    kgops images --import SOCK --ctr CTR   # also import them all into a running containerd

The images and their pins: imagepins.py; how each is built: imagebuild.py; the archive: oci.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node.imagebuild import BUILDERS, _run
from kserve_gitops.node.imagepins import Image, pinned
from kserve_gitops.node.oci import archive_ref
from kserve_gitops.repo import Repo


def _select(images: list[Image], names: Iterable[str] | None) -> list[Image]:
    if not names:
        return images
    wanted = set(names)
    unknown = wanted - {i.name for i in images}
    if unknown:
        known = ", ".join(i.name for i in images)
        raise BuildError(f"no image {', '.join(sorted(unknown))} (the images: {known})")
    return [i for i in images if i.name in wanted]


def ensure(
    repo: Repo,
    echo: Callable[[str], None] | None = None,
    names: Iterable[str] | None = None,
    builders: dict[str, Callable[[Image, Repo], Path]] | None = None,
) -> dict[str, Path]:
    """Every pinned image (or those `names`), built where its archive is missing; name ->
    archive. A progress line per image built; nothing is built when all are cached."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    builders = builders or BUILDERS
    todo = _select(pinned(repo), names)
    for number, image in enumerate(todo, start=1):
        if image.path.is_file():
            continue
        echo(f"[{number}/{len(todo)}] building {image.ref} ({image.build}) ...")
        started = time.monotonic()
        size = builders[image.kind](image, repo).stat().st_size / 2**20
        echo(f"    {image.name}: {time.monotonic() - started:.0f}s, {size:.0f} MiB")
    return {image.name: image.path for image in todo}


def locate(repo: Repo, names: Iterable[str] | None = None) -> dict[str, Path]:
    """The pinned images' archives, already built; BuildError naming what is missing."""
    todo = _select(pinned(repo), names)
    missing = [i for i in todo if not i.path.is_file()]
    if missing:
        what = ", ".join(i.ref for i in missing)
        raise BuildError(f"not built yet: {what}; `make images` builds them")
    return {image.name: image.path for image in todo}


def refs(repo: Repo) -> dict[str, str]:
    """name -> image reference (dev.local/kserve-gitops/<name>:<version>), what manifests and
    containerd's sandbox image setting name."""
    return {image.name: image.ref for image in pinned(repo)}


def import_images(
    ctr: Path,
    address: Path,
    namespace: str = "k8s.io",
    archives: Iterable[Path] | None = None,
    repo: Repo | None = None,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Import every archive (default: every pinned image, built) into the containerd at
    `address`, in `namespace` (k8s.io: the CRI's), unpacked for its default snapshotter, with
    `labels` on each image (e.g. {"io.cri-containerd.pinned": "pinned"}, which the kubelet's
    image GC spares); the references imported, each checked in `ctr images list`. `ctr images
    import` (through the transfer service) names each image by the archive's
    io.containerd.image.name; --base-name refuses any other name."""
    paths = (
        list(archives) if archives is not None else list(locate(repo or Repo.discover()).values())
    )
    base = [str(ctr), "--address", str(address), "--namespace", namespace, "images"]
    label_args = [arg for k, v in (labels or {}).items() for arg in ("--label", f"{k}={v}")]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise BuildError(f"no archive {', '.join(missing)}; `make images` builds them")
    imported: list[str] = []
    for path in paths:
        ref = archive_ref(path)
        argv = [*base, "import", "--base-name", ref.rsplit(":", 1)[0], *label_args, str(path)]
        _run(argv, f"import {path}")
        imported.append(ref)
    listed = _run([*base, "list", "-q"], "list images").split()
    missing = [ref for ref in imported if ref not in listed]
    if missing:
        raise BuildError(f"containerd at {address} does not list {', '.join(missing)} after import")
    return imported


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the cache, build nothing")
    parser.add_argument("--only", action="append", metavar="NAME", help="this image only (repeat)")
    parser.add_argument(
        "--import",
        dest="address",
        type=Path,
        metavar="SOCKET",
        help="then import them into the containerd listening on SOCKET",
    )
    parser.add_argument("--ctr", type=Path, help="the ctr binary of --import (default: on PATH)")
    parser.add_argument("--namespace", default="k8s.io", help="containerd namespace of --import")
    args = parser.parse_args(argv)
    try:
        images = _select(pinned(repo), args.only)
        if not args.list:
            started = time.monotonic()
            ensure(repo, names=args.only)
            print(f"images ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        for image in images:
            state = "built" if image.path.is_file() else "missing"
            size = f"{image.path.stat().st_size / 2**20:.0f} MiB" if state == "built" else "-"
            print(f"{image.ref:<58} {state:<8} {size:>8}  {image.path}")
        if args.address:
            ctr = args.ctr or (Path(shutil.which("ctr") or "ctr"))
            archives = [i.path for i in images]
            for ref in import_images(ctr, args.address, args.namespace, archives):
                print(f"imported {ref}")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
