"""Break a throwaway copy of the checkout (the `repo_copy` fixture) and run `make validate` on it
in this interpreter: no new process re-importing the Helm SDK for each case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kserve_gitops.checks import validate as validate_command
from kserve_gitops.repo import Repo


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def line_with(self, marker: str) -> str:
        """The first error line holding `marker` ("" when none does)."""
        return next((ln for ln in self.stderr.splitlines() if marker in ln), "")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def validate(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """`kgops validate --quiet args...` on the checkout at `root`."""
    capsys.readouterr()  # what the test printed before is not the command's
    code = validate_command.main(["--quiet", *args], Repo(root))
    out = capsys.readouterr()
    return Outcome(code, out.out, out.err)
