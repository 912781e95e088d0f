"""Committed files that a generator owns: written atomically, or compared with what the generator
would write now (`--check`), so a hand edit or a config change without regeneration is caught."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops import paths


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, dashboard JSON) as literal blocks: readable, diffable."""


_Dumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar(
        "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None
    ),
)


def manifest_text(obj: dict[str, Any], header: str) -> str:
    """One Kubernetes object as YAML under a comment header (each line prefixed with #)."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    body = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return f"{comment}{body}"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def sync(files: dict[Path, str], check: bool, command: str) -> int:
    """Write `files` (path -> text), or with `check` report those that differ; exit status."""
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    if check:
        for p in stale:
            print(f"{paths.rel(p)}: out of date: run `{command}`", file=sys.stderr)
        print(f"{len(files) - len(stale)}/{len(files)} generated files up to date")
        return 1 if stale else 0
    for p in stale:
        write_atomic(p, files[p])
        print(f"wrote {paths.rel(p)}")
    print(f"{len(files)} generated files, {len(stale)} rewritten")
    return 0
