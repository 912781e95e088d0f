"""Helpers of the distributed load and dashboard tests: free ports, the fast predict server."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests import REPO

PORTS = range(19000, 20000)  # this suite's servers stay in one range, on 127.0.0.1


def free_port() -> int:
    for port in random.sample(PORTS, 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port} after {timeout:g}s")


@contextmanager
def fast_server() -> Iterator[str]:
    """kserve_gitops.load.fastserver: real predictions, never the bottleneck; its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kserve_gitops.load.fastserver", "--port", str(port)],
        cwd=REPO.root,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def slo_file(path, *, rate: float, duration: str, **targets: float) -> str:
    """An SLO config with these load defaults and targets (the rest lenient)."""
    t = {
        "latency_avg_ms": 2000,
        "latency_max_ms": 10000,
        "throughput_min_rps": rate * 0.95,
        "error_ratio_max": 0,
        **targets,
    }
    path.write_text(
        "defaults:\n"
        f"  load: {{rate: {rate:g}, duration: {duration}, protocol: v1}}\n"
        "  targets: {" + ", ".join(f"{k}: {v:g}" for k, v in t.items()) + "}\n"
    )
    return str(path)
