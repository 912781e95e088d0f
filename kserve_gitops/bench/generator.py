"""The load generator's own limits: the highest open-loop rate it sustains with N Locust worker
processes against kserve_gitops.load.fastserver, a server that is never the bottleneck."""

from __future__ import annotations

from kserve_gitops.load.measure import Knobs, measure, search_max_rate

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kserve_gitops.base.wait import wait_until
from kserve_gitops.repo import Repo
from kserve_gitops.serving.process import LocalServer, free_port


@contextlib.contextmanager
def fast_server(repo: Repo, port: int) -> Iterator[LocalServer]:
    """kserve_gitops.load.fastserver on `port` (0: a free one), as a LocalServer."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kserve_gitops.load.fastserver", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "KGOPS_ROOT": str(repo.root)},
    )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the fast predict server exited with {proc.returncode}")
            return _listening(port)

        wait_until(listening, 30, 0.1, f"the fast predict server on port {port}", RuntimeError)
        url = f"http://127.0.0.1:{port}"
        yield LocalServer(url, repo.default_model(), proc, Path(os.devnull))
    finally:
        proc.kill()
        proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def limits(
    repo: Repo,
    worker_counts: list[int],
    *,
    step_s: float,
    max_rate: float,
    fast_port: int,
    master_port: int,
    log=print,
) -> dict[str, Any]:
    """For each worker count: the highest open-loop rate the generator sustains (the same pass
    rule as the server search) against the fast server, and its CPU per request there."""
    knobs = Knobs(step_s=step_s, start_rate=min(250.0, max_rate), max_rate=max_rate)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "server": "kserve_gitops.load.fastserver (one asyncio process, predictions memoized)",
        "knobs": asdict(knobs),
        "load_average_start": list(os.getloadavg()),
        "limits": [],
    }
    with fast_server(repo, fast_port) as fast:
        measure(repo, fast, "v1", 200, 2, workers=1, master_port=master_port)  # warm-up
        for workers in worker_counts:
            log(f"generator: {workers} Locust worker process(es) against the fast server")
            best, steps = search_max_rate(
                repo, fast, "v1", knobs, log, workers=workers, master_port=master_port
            )
            results["limits"].append({"workers": workers, "max": best, "steps": steps})
    results["load_average_end"] = list(os.getloadavg())
    return results
