"""One supervised host process, after controller-runtime's pkg/internal/testing/process: a
state (not started, starting, ready, stopped, failed), a readiness check polled within a start
timeout, a stop timeout after which it is killed, a log of its own, and errors that name the
process, what it waited for and the tail of its log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kserve_gitops.base.wait import wait_until

# What "ready" means for a process: None when ready, else what it is still waiting for.
Check = Callable[[], str | None]


class ProcessError(Exception):
    """A process that exited or did not get ready in time; says which, why, and its log."""


def tail(path: Path, lines: int = 20) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Process:
    name: str
    argv: Sequence[str]
    log: Path
    ready: Check = lambda: None
    env: Mapping[str, str] | None = None
    start_timeout_s: float = 60
    stop_timeout_s: float = 20
    poll_s: float = 0.3
    state: str = "not started"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Spawn it in a session of its own (a signal to the harness does not reach it before
        the harness stops it in order), then wait until `ready` passes."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                start_new_session=True,
            )
        self.state = "starting"
        self.wait_ready()

    def wait_ready(self) -> None:
        waiting = "no check ran"

        def ready() -> bool:
            nonlocal waiting
            self.check_alive()
            try:
                waiting = self.ready() or ""
            except OSError as exc:
                waiting = str(exc)
            return not waiting

        try:
            wait_until(
                ready,
                self.start_timeout_s,
                self.poll_s,
                lambda: f"{self.name} to be ready ({waiting}); log {self.log}:\n{tail(self.log)}",
                ProcessError,
            )
        except ProcessError:
            self.state = "failed"
            raise
        self.state = "ready"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.state = "failed"
            raise ProcessError(
                f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n{tail(self.log)}"
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its whole session after `stop_timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            self.state = "stopped"
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.state = "stopped"

    def restart(self) -> None:
        self.stop()
        self.start()
