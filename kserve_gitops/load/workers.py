"""Locust worker processes on this machine for a distributed run, and waiting for them all."""

from __future__ import annotations

from locust.runners import MasterRunner

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kserve_gitops.base.wait import wait_until
from kserve_gitops.repo import Repo

CONNECT_TIMEOUT_S = 60.0


class WorkerError(RuntimeError):
    """Workers did not start or did not connect."""


def command(locustfile: Path, master_host: str, master_port: int) -> list[str]:
    """A Locust worker of the master at master_host:master_port."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]


class LocalWorkers:
    """`count` `locust --worker` processes connecting to the master on 127.0.0.1:port."""

    def __init__(self, repo: Repo, locustfile: Path, master_port: int, count: int) -> None:
        self.repo = repo
        self.locustfile = locustfile
        self.master_port = master_port
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="kgops-workers-"))

    def start(self) -> None:
        for i in range(self.count):
            with (self.logs / f"worker-{i}.log").open("wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        command(self.locustfile, "127.0.0.1", self.master_port),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env={**os.environ, "KGOPS_ROOT": str(self.repo.root)},
                    )
                )

    def wait_for(self, runner: MasterRunner, expected: int, out=print) -> None:
        """Until `expected` workers (these and any from other machines) are connected."""
        remote = expected - self.count
        if remote:
            out(f"waiting for {remote} more worker(s) on port {self.master_port} (--worker)")

        def connected() -> bool:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise WorkerError(
                        f"worker process {i} exited with {proc.returncode} before the run:\n"
                        + self.tail(i)
                    )
            return runner.worker_count >= expected

        wait_until(
            connected,
            CONNECT_TIMEOUT_S,
            0.2,
            lambda: (
                f"{expected} workers connected to the master on port {self.master_port}"
                f" (only {runner.worker_count})"
            ),
            WorkerError,
        )

    def tail(self, i: int, lines: int = 20) -> str:
        text = (self.logs / f"worker-{i}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Workers exit on the master's quit; any that does not within 10 s is killed."""
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs.glob("*.log"):
            log.unlink()
        self.logs.rmdir()
