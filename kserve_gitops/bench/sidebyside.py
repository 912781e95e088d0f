"""KServe's sklearn server and MLServer measured side by side in one run (part of `make bench`).

Every runtime and setting is started afresh in each round, in an order that rotates between
rounds, so that a neighbour's burst on the shared machine falls on different configurations
in different rounds. Per configuration and protocol: cold start (process start to the first
successful prediction), latency at 80 req/s from the scheduled send time, the highest arrival
rate with p99 <= 50 ms (kserve_gitops.load.measure's search), server CPU per request and the
resident memory of the runtime's processes.
"""

from __future__ import annotations

from kserve_gitops.load import measure

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from kserve_gitops.base import machine
from kserve_gitops.base.wait import wait_until
from kserve_gitops.bench import pinning, profile, rounds, sidebyside_report
from kserve_gitops.bench.runtime_configs import CONFIGS, Config
from kserve_gitops.repo import Repo
from kserve_gitops.serving import client, mlserver, process
from kserve_gitops.serving.process import LocalServer

PREDICT_BODY = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}


def runtime_procs(local: LocalServer, runtime: str) -> list[psutil.Process]:
    """The processes the runtime runs in the pod: MLServer's launcher here is ours, not MLServer."""
    root = psutil.Process(local.process.pid)
    children = root.children(recursive=True)
    return children if runtime == "mlserver" else [root, *children]


def _rss_mib(procs: list[psutil.Process]) -> list[float]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.append(proc.memory_info().rss / 2**20)
    return out


def cold_start(
    repo: Repo, config: Config, port: int, log_path: Path, prefix: Sequence[str] = ()
) -> tuple[LocalServer, float]:
    """Start the configuration's server (through `prefix`: pinning.exec_prefix); seconds from
    process start to a successful prediction (V2 for MLServer, V1 otherwise; both protocols
    share the loaded model)."""
    protocol = config.protocols[0]
    path = client.predict_path(protocol, repo.default_model())
    body = client.request_body(protocol, PREDICT_BODY["instances"])
    started = time.monotonic()
    local = process.start_background(
        repo,
        config.runtime,
        port=port,
        extra_args=list(config.args),
        log_path=log_path,
        timeout=180,
        prefix=prefix,
    )

    def predicts() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(local.url + path, json=body, timeout=5, trust_env=False)
            return response.status_code == 200
        return False

    try:  # 180 s from the process start, as the start's own timeout
        remaining = 180 - (time.monotonic() - started)
        wait_until(predicts, remaining, 0.01, f"{config.name}'s first successful prediction")
    except TimeoutError:
        local.stop()
        raise
    return local, time.monotonic() - started


def start_on_free_port(
    repo: Repo, config: Config, log_path: Path, prefix: Sequence[str] = (), attempts: int = 3
) -> tuple[LocalServer, float]:
    """cold_start on a free port block; once more on another block when a process of the
    shared machine took the port between the check and the server's bind (EADDRINUSE)."""
    for attempt in range(1, attempts + 1):
        try:
            return cold_start(repo, config, process.port_block(), log_path, prefix)
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def measure_point(
    repo: Repo, local: LocalServer, runtime: str, protocol: str, rate: float, duration: float
) -> dict[str, Any]:
    """measure.measure plus the runtime's CPU time per completed request."""
    procs = runtime_procs(local, runtime)
    before = measure.cpu_seconds(procs)
    point = measure.measure(repo, local, protocol, rate, duration)
    cpu = measure.cpu_seconds(procs) - before
    point["server_cpu_ms_per_request"] = 1000 * cpu / max(point["requests"], 1)
    return point


def run_config(
    repo: Repo,
    config: Config,
    knobs: measure.Knobs,
    logs: Path,
    round_no: int,
    log: Callable[[str], None],
    prefix: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Cold start, then per protocol the fixed-rate point and the max-rate search; each point
    says which CPUs the generator and every thread of the server could run on."""
    local, cold = start_on_free_port(repo, config, logs / f"{config.name}-{round_no}.log", prefix)
    cpus = {
        "generator": sorted(os.sched_getaffinity(0)),
        "server": list(pinning.tree_affinity(local.process.pid)),
    }
    log(f"  {config.name}: cold start {cold:.2f} s, CPUs {cpus}")
    out = []
    try:
        for protocol in config.protocols:
            measure.measure(repo, local, protocol, 50, 2)  # warm-up: connections, lazy imports
            fixed = measure_point(
                repo, local, config.runtime, protocol, measure.FIXED_RATE, knobs.fixed_s
            )
            lat = fixed["latency_ms"]
            log(
                f"  {config.name} {protocol} at {measure.FIXED_RATE:g} req/s: avg {lat['avg']:.2f}"
                f" ms, p99 {lat['p99']:.2f} ms, server {fixed['server_cpu_ms_per_request']:.2f}"
                " ms CPU/request"
            )
            best, steps = measure.search_max_rate(repo, local, protocol, knobs, log)
            if best:  # CPU per request at the max-rate point, from the same processes
                point = measure_point(
                    repo, local, config.runtime, protocol, best["rate"], knobs.step_s
                )
                best = {**best, "server_cpu_ms_per_request": point["server_cpu_ms_per_request"]}
            rss = _rss_mib(runtime_procs(local, config.runtime))
            out.append(
                {
                    "config": config.name,
                    "runtime": config.runtime,
                    "protocol": protocol,
                    "round": round_no,
                    "cold_start_s": cold,
                    "rss_mib": rss,
                    "fixed": fixed,
                    "max": best,
                    "steps": steps,
                    "cpus": cpus,
                }
            )
    finally:
        local.stop()
    return out


def versions(repo: Repo) -> dict[str, str | None]:
    """The runtimes' own versions: kserve in this venv, MLServer in its own."""
    names = ["mlserver", "mlserver-sklearn", "scikit-learn", "fastapi", "uvicorn", "uvloop"]
    code = (
        "import json, sys; from importlib.metadata import version; "
        "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    )
    python = mlserver.mlserver_command(repo).parent / "python"
    done = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, check=True
    )
    theirs = json.loads(done.stdout)
    return {
        **machine.package_versions(["kserve"]),
        **{n if n.startswith("mlserver") else f"{n} (MLServer venv)": theirs[n] for n in names},
    }


def run(
    repo: Repo,
    knobs: measure.Knobs,
    n_rounds: int = rounds.DEFAULT_ROUNDS,
    configs: tuple[Config, ...] = CONFIGS,
    profile_rate: float = 0.0,
    pin: pinning.Pinning | None = None,
    pin_note: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The interleaved rounds (bench.rounds), the generator in this process on pin.generator
    and each server on pin.server; then (profile_rate > 0) a py-spy profile of each
    configuration over V2 at that rate for knobs.fixed_s seconds, pinned the same way."""
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "knobs": asdict(knobs),
        "rounds": n_rounds,
        "configs": [
            {"name": c.name, "runtime": c.runtime, "args": list(c.args), "note": c.note}
            for c in configs
        ],
        "versions": versions(repo),
        "pinning": pin.to_json() if pin else None,
        "pinning_note": pin_note,
        "cpus_online": pinning.online(),
    }
    prefix = pinning.exec_prefix(pin.server) if pin else []
    held = pinning.pinned(pin.generator) if pin else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="kgops-sidebyside-") as logs, held:

        def one(config: Config, number: int) -> rounds.Measurement:
            points = run_config(repo, config, knobs, Path(logs), number, log, prefix)
            return rounds.Measurement(sidebyside_report.metrics_of(points), points)

        done = rounds.run(configs, one, n_rounds, name=lambda c: c.name, log=log)
        if profile_rate:
            results["profiles"] = profiles(
                repo, configs, profile_rate, knobs.fixed_s, Path(logs), log, prefix
            )
    results["points"] = [point for record in done.records for point in record.detail]
    results["order"] = done.order
    results["rounds_run"] = done.to_json(detail=False)  # the points hold the detail
    results["load_average_start"] = done.load_average_start
    results["load_average_end"] = done.load_average_end
    results["pinning_observed"] = {
        side: pinning.cpulist(c for p in results["points"] for c in p["cpus"][side])
        for side in ("generator", "server")
    }
    return results


def profiles(
    repo: Repo,
    configs: tuple[Config, ...],
    rate: float,
    duration: float,
    logs: Path,
    log: Callable[[str], None],
    prefix: Sequence[str] = (),
) -> list[dict[str, Any]] | str:
    """Where each configuration's Python time goes (kserve_gitops.bench.profile), or why it
    could not be sampled."""
    out = []
    for config in configs:
        try:
            counts, point = profile.profile(
                repo, config, "v2", rate, duration, logs / config.name, prefix=prefix
            )
        except (FileNotFoundError, RuntimeError) as exc:
            log(f"  profile skipped: {exc}")
            return str(exc).splitlines()[0]
        total = sum(counts.values()) or 1
        out.append(
            {
                "config": config.name,
                "rate": rate,
                "duration_s": duration,
                "latency_ms": point["latency_ms"],
                "samples": sum(counts.values()),
                "shares": {name: count / total for name, count in counts.most_common()},
            }
        )
        log(f"  profile {config.name}: {sum(counts.values())} samples")
    return out
