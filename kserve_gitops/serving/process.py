"""A model server as a background process, for tests, the demo, the benchmarks and canary
analysis: started on a free port from the checkout, waited for, and stopped like a pod."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kserve_gitops.base.wait import wait_until
from kserve_gitops.repo import Repo
from kserve_gitops.serving import runtimes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_block(start: int = 38400, end: int = 38999, size: int = 3) -> int:
    """The first of `size` consecutive free ports in [start, end] (MLServer: HTTP, gRPC,
    metrics), so local servers stay in the range this machine allows them."""
    for base in range(start, end - size + 2, size):
        try:
            sockets = [socket.create_server(("127.0.0.1", base + i)) for i in range(size)]
        except OSError:
            continue
        for s in sockets:
            s.close()
        return base
    raise RuntimeError(f"no {size} consecutive free ports in {start}-{end}")


def answers(url: str) -> bool:
    """GET `url` answers 2xx (False while nothing listens yet)."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2, trust_env=False).is_success
    return False


@dataclass
class LocalServer:
    """A server subprocess; `url` is its base URL, `log_path` holds its output; `ready_path`
    answers 2xx once the model is loaded."""

    url: str
    model_name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)
    ready_path: str = ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"model server exited with {self.process.returncode} before it was ready:\n"
                f"{self.log_text()[-3000:]}"
            )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            self._alive()  # raises once the server exited: waiting is pointless
            return answers(self.url + self.ready_path)

        try:
            wait_until(ready, timeout, 0.1, "the model server to be ready")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}:\n{self.log_text()[-3000:]}") from None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (graceful, like a pod's shutdown), then SIGKILL the group if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return self.process.returncode


def start_background(
    repo: Repo,
    runtime: str = "sklearnserver",
    *,
    model_name: str | None = None,
    model_dir: Path | None = None,
    port: int | None = None,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 60,
    prefix: Sequence[str] = (),
) -> LocalServer:
    """Start the runtime's launcher (runtimes.LAUNCHERS) against `repo` on a free port and wait
    until the model is ready. `prefix` runs the launcher through a command that then executes
    it in the same process (bench.pinning.exec_prefix: on given CPUs)."""
    runtimes.check(runtime)
    model_name = model_name or repo.default_model()
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        runtimes.LAUNCHERS[runtime],
        "--model-name",
        model_name,
        "--http-port",
        str(port),
        "--workers",
        str(workers),
        *(["--model-dir", str(model_dir)] if model_dir else []),
        *extra_args,
    ]
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"kgops-{model_name}-{port}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*prefix, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KGOPS_ROOT": str(repo.root), **(env or {})},
            cwd=repo.root,
            start_new_session=True,  # its own process group: stop() can reap spawned workers
        )
    url = f"http://127.0.0.1:{port}"
    ready = runtimes.ready_path(runtime, model_name)
    server = LocalServer(url, model_name, process, log_path, args, ready)
    server.wait_ready(timeout)
    return server


@contextlib.contextmanager
def running(repo: Repo, runtime: str = "sklearnserver", **kwargs: Any) -> Iterator[LocalServer]:
    """`with running(repo, workers=2) as server: httpx.post(server.url + ...)`; always stops
    it."""
    server = start_background(repo, runtime, **kwargs)
    try:
        yield server
    finally:
        server.stop()
