"""The wrk cross-check of `kgops bench`: closed loop, fixed connections, wrk's own latencies."""

from __future__ import annotations

from kserve_gitops.load.measure import cpu_seconds, server_procs

import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

from kserve_gitops.repo import Repo
from kserve_gitops.serving import payloads
from kserve_gitops.serving.process import LocalServer

WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [=[{body}]=]
"""
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_point(repo: Repo, local: LocalServer, connections: int, seconds: int) -> dict[str, Any]:
    """wrk against V1 predict: closed loop, `connections` always busy, its own latencies."""
    wrk = shutil.which("wrk") or "wrk"
    body = (payloads.directory(repo) / "v1-iris-two.json").read_text().strip()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=body))
    try:
        url = f"{local.url}/v1/models/{local.model_name}:predict"
        procs = server_procs(local)
        before, wall = cpu_seconds(procs), time.monotonic()
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
        server_cpu = 100 * (cpu_seconds(procs) - before) / (time.monotonic() - wall)
    finally:
        os.unlink(script.name)
    latency = {
        f"p{pct}": float(value) * _WRK_UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "connections": connections,
        "seconds": seconds,
        "rps": float(rps.group(1)) if rps else 0.0,
        "latency_ms": latency,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_cpu_pct": server_cpu,
        "version": subprocess.run(
            [wrk, "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
    }


def cross_check(repo: Repo, local: LocalServer, log) -> list[dict[str, Any]]:
    """1 connection: service time without queueing; 16: capacity at saturation."""
    points = [wrk_point(repo, local, connections, seconds=10) for connections in (1, 16)]
    for point in points:
        log(
            f"  wrk -c{point['connections']}: {point['rps']:.0f} req/s, "
            f"p50 {point['latency_ms'].get('p50', 0):.2f} ms, "
            f"p99 {point['latency_ms'].get('p99', 0):.2f} ms, non-2xx {point['non_2xx']}"
        )
    return points
