"""Committed files that a generator owns: written atomically, or compared with what the generator
would write now (`--check`), so a hand edit or a config change without regeneration is caught."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kserve_gitops.repo import Repo, files


def manifest_text(obj: dict[str, Any], header: str) -> str:
    """One Kubernetes object as YAML under a comment header (each line prefixed with #)."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    return f"{comment}{files.dump_yaml(obj)}"


def sync(repo: Repo, texts: dict[Path, str], check: bool, command: str) -> int:
    """Write `texts` (path -> text), or with `check` report those that differ; exit status."""
    stale = [p for p, text in texts.items() if not p.is_file() or p.read_text() != text]
    if check:
        for p in stale:
            print(f"{repo.rel(p)}: out of date: run `{command}`", file=sys.stderr)
        print(f"{len(texts) - len(stale)}/{len(texts)} generated files up to date")
        return 1 if stale else 0
    for p in stale:
        files.write_text(p, texts[p])
        print(f"wrote {repo.rel(p)}")
    print(f"{len(texts)} generated files, {len(stale)} rewritten")
    return 0


def main(
    repo: Repo,
    argv: list[str] | None,
    description: str,
    produce: Callable[[], dict[Path, str]],
    errors: tuple[type[Exception], ...],
    command: str,
) -> int:
    """The command line every generator shares: write its files, or `--check` them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    try:
        texts = produce()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return sync(repo, texts, args.check, command)
