"""Writing files the harness produces: atomically (a crash or a refused change leaves the old
file whole), and YAML with multi-line strings as literal blocks so they read and diff by line."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


@contextmanager
def replacing(path: Path, mode: int = 0o644, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write; it replaces `path` only if the block succeeds.
    The suffix matters to readers that go by extension (a second .joblib beside the model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600; our files are committed and mounted
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


class _BlockDumper(yaml.SafeDumper):
    pass


_BlockDumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar(
        "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None
    ),
)


def dump_yaml(obj: Any, sort_keys: bool = False) -> str:
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=sort_keys, width=100, allow_unicode=True)
