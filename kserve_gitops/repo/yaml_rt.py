"""Round-trip YAML for files people also edit by hand: comments, key order, quotes and layout
survive a load/modify/dump, and writes are atomic (temp file, then os.replace)."""

from __future__ import annotations

import difflib
import io
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kserve_gitops.repo import Repo, files


class YamlEditError(ValueError):
    """A file that cannot be read as YAML; the message names it."""


def _yaml(explicit_start: bool) -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.explicit_start = explicit_start
    return yaml


def load(repo: Repo, path: Path) -> tuple[str, Any]:
    """The file's text and its round-trip document (a CommentedMap for a mapping)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise YamlEditError(f"{repo.rel(path)}: file not found") from None
    try:
        return text, _yaml(False).load(text)
    except YAMLError as exc:
        raise YamlEditError(f"{repo.rel(path)}: malformed YAML: {exc}") from None


def dumps(doc: Any, like: str) -> str:
    """`doc` as text, keeping the `---` start line if the original text (`like`) had one."""
    out = io.StringIO()
    _yaml(like.lstrip().startswith("---")).dump(doc, out)
    return out.getvalue()


def diff(repo: Repo, path: Path, before: str, after: str) -> str:
    name = repo.rel(path)
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"
    )
    return "".join(lines)


def write_all(texts: dict[Path, str]) -> None:
    """Write every file to a temp file first, then move them into place one after another."""
    with ExitStack() as stack:  # nothing is moved into place unless every file was written
        for path, text in texts.items():
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            stack.enter_context(files.replacing(path, mode)).write_text(text)
