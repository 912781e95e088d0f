"""`kgops`: the declared console script lists every command and reaches each module's options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kserve_gitops import cli
from tests import REPO


def test_the_console_script_lists_every_command() -> None:
    script = Path(sys.executable).parent / "kgops"
    proc = subprocess.run(
        [
            str(script) if script.is_file() else sys.executable,
            *([] if script.is_file() else ["-m", "kserve_gitops.cli"]),
            "--help",
        ],
        capture_output=True,
        text=True,
        cwd=REPO.root,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()]
    assert listed == list(cli.COMMANDS)


def test_every_module_with_a_main_is_a_command() -> None:
    mains = {
        ".".join(p.relative_to(REPO.root / "kserve_gitops").with_suffix("").parts)
        for p in (REPO.root / "kserve_gitops").rglob("*.py")
        if "\ndef main(argv" in p.read_text()
    }
    # Entry points a command starts (`e2e --delivery flux`, a server in MLServer's own
    # virtualenv, a render of a base revision, a test server), not commands of their own.
    internal = {"cli", "e2e.delivery", "review.snapshot", "load.fastserver"}
    assert mains - internal == {module for module, _ in cli.COMMANDS.values()}


def test_every_main_takes_the_repo_it_runs_against() -> None:
    for module, _ in cli.COMMANDS.values():
        source = (REPO.root / "kserve_gitops" / f"{module.replace('.', '/')}.py").read_text()
        assert "\ndef main(argv: list[str] | None = None, repo: Repo | None = None)" in source, (
            module
        )


# In a child process: some commands import Locust, whose gevent patches the whole interpreter.
HELP_ALL = """
import contextlib, io, json, sys
from kserve_gitops import cli
answers = {}
for command in cli.COMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main([command, "--help"])
        except SystemExit as done:
            code = done.code
    answers[command] = [code, out.getvalue()[:200]]
sys.stdout = sys.__stdout__
print(json.dumps(answers))
"""


def test_each_command_answers_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HELP_ALL],
        capture_output=True,
        text=True,
        cwd=REPO.root,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(answers) == list(cli.COMMANDS)
    for command, (code, text) in answers.items():
        assert code == 0 and text.startswith("usage: "), (command, code, text)


def test_an_unknown_command_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy-everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'deploy-everything'" in err and "validate" in err
