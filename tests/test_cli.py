"""`kgops`: the declared console script lists every command and reaches each module's options."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from kserve_gitops import cli, paths


def test_the_console_script_lists_every_command() -> None:
    script = Path(sys.executable).parent / "kgops"
    proc = subprocess.run(
        [str(script) if script.is_file() else sys.executable, *([] if script.is_file() else
         ["-m", "kserve_gitops.cli"]), "--help"],
        capture_output=True, text=True, cwd=paths.ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()]
    assert listed == list(cli.COMMANDS)


def test_every_module_with_a_main_is_a_command() -> None:
    mains = {
        ".".join(p.relative_to(paths.ROOT / "kserve_gitops").with_suffix("").parts)
        for p in (paths.ROOT / "kserve_gitops").rglob("*.py")
        if "\ndef main(argv" in p.read_text()
    }
    # Internal entry points a command starts, not commands of their own.
    internal = {"cli", "load.fastserver", "review.snapshot"}
    assert mains - internal == {module for module, _ in cli.COMMANDS.values()}


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_answers_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"kserve_gitops.{cli.COMMANDS[command][0]}")
    assert callable(module.main)
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_an_unknown_command_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy-everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'deploy-everything'" in err and "validate" in err
