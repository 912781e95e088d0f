"""Break a throwaway copy of the checkout (the `repo_copy` fixture) and run a command on it in
this interpreter: no new process re-importing the Helm SDK per case. The `kgops` fixture runs
its in-process commands through `in_process` too.

A rule's own failure is asserted through `kgops policy` (it renders the environments only);
that `make validate` reports what the policies find is asserted once (tests/checks/test_mesh.py).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kserve_gitops import cli
from kserve_gitops.repo import Repo


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def assert_fails_with(self, fragments: list[str], on_line_with: str = "") -> None:
        """Exit 1, each fragment in the error output (on the first line holding `on_line_with`,
        when given: one message names file, field and reason together)."""
        assert self.code == 1, self.stdout
        where = self.stderr
        if on_line_with:
            where = next((ln for ln in self.stderr.splitlines() if on_line_with in ln), "")
        for fragment in fragments:
            assert fragment in where, f"{fragment!r} not in {where!r}:\n{self.stderr}"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def in_process(
    command: str, root: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`kgops command args...` against the checkout at `root`, in this interpreter, from `root`
    as under make; its exit code and output as a CompletedProcess."""
    capsys.readouterr()  # what the test printed before is not the command's
    with contextlib.chdir(root):
        try:
            code = cli.main([command, *args], Repo(root))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["kgops", command, *args], code, out, err)


def _outcome(done: subprocess.CompletedProcess[str]) -> Outcome:
    return Outcome(done.returncode, done.stdout, done.stderr)


def run_validate(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """`kgops validate --quiet args...` on the checkout at `root`."""
    return _outcome(in_process("validate", root, capsys, "--quiet", *args))


def run_policy(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """`kgops policy args...` on the checkout at `root`."""
    return _outcome(in_process("policy", root, capsys, *args))
