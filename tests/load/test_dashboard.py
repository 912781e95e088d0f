"""The SLO tab of the Locust dashboard: the environment's targets, live figures from the
scheduled send time and a verdict per target; at the stop the final verdict with exactly the
numbers of the run's summary.json, and the report folder. Over HTTP as the web UI polls it, in
one process and with two workers, then in headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kserve_gitops.repo import slo
from tests import REPO
from tests.load_helpers import free_port, wait_for_port

# The dashboard's SLO tab and CSV (kserve_gitops.load.dashboard; not imported: Locust would
# monkey-patch this test process with gevent).
TAB, CSV_PATH = "slo", "/kgops/slo.csv"
INSTALL_HINT = "run `make chromium` (Debian's chromium package) or set CHROMIUM to its path"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium, or a skip with the reason; in CI (CI set) a missing chromium fails."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if found and Path(found).is_file():
        return found
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and chromium is missing: {INSTALL_HINT}")
    pytest.skip(f"chromium not installed: {INSTALL_HINT}")


@contextmanager
def running_dashboard(target: str, reports: Path, *extra: str) -> Iterator[str]:
    """`kgops loadtest --ui` (what `make loadtest-ui` runs); its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kserve_gitops.load.loadtest",
            "--ui",
            "--web-port",
            str(port),
            "--target",
            target,
            "--reports",
            str(reports),
            "--env",
            "prod",
            "--rate",
            "40",
            "--users",
            "8",
            *extra,
        ],
        cwd=REPO.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # Locust quits its workers on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def slo_rows(url: str) -> dict[str, list[str]]:
    """The SLO tab's rows as the web UI receives them with every stats poll."""
    doc = httpx.get(f"{url}/stats/requests", timeout=10).json()
    [table] = [t for t in doc["extended_stats"] if t["key"] == TAB]
    return {r["figure"]: [r["value"], r["target"], r["verdict"]] for r in table["data"]}


def wait_rows(url: str, ready, timeout: float = 90) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = slo_rows(url)
        if ready(rows):
            return rows
        time.sleep(0.5)
    raise TimeoutError(f"SLO rows never got ready: {rows}")


def ms(value: str) -> float:
    assert value.endswith(" ms"), value
    return float(value.removesuffix(" ms"))


def assert_prod_targets(rows: dict[str, list[str]]) -> None:
    targets = slo.load_slo(REPO, "prod").targets  # config/slo.yaml with prod's overrides
    assert rows["latency avg"][1] == f"<= {targets.latency_avg_ms:g} ms"
    assert rows["latency max"][1] == f"<= {targets.latency_max_ms:g} ms"
    assert rows["latency p99"][1] == f"<= {targets.latency_p99_ms:g} ms" == "<= 200 ms"
    assert rows["achieved rate"][1] == f">= {targets.throughput_min_rps:g} req/s"
    assert rows["error ratio"][1] == f"<= {targets.error_ratio_max:g}"


def assert_final_is_the_summary(rows: dict[str, list[str]]) -> dict:
    """The final rows carry exactly summary.json's numbers; returns the summary."""
    report_dir = Path(rows["report"][0])
    if not report_dir.is_absolute():
        report_dir = REPO.root / report_dir
    summary = json.loads((report_dir / "summary.json").read_text())
    assert rows["state"][0] == "stopped" and rows["verdict"][:1] == ["final"]
    assert rows["verdict"][2] == summary["verdict"]
    lat = summary["latency_ms"]
    by_target = {c["target"]: c for c in summary["checks"]}
    figure = {"throughput": "achieved rate"}
    for key in ("avg", "p50", "p95", "p99", "max"):
        # A figure with a target shows the check's measure (below): the max of a run stopped
        # with requests in flight is unbounded there, whatever the latencies of those answered.
        if f"latency {key}" not in by_target:
            assert rows[f"latency {key}"][0] == f"{lat[key]:.2f} ms"
    assert rows["achieved rate"][0] == f"{summary['throughput_rps']:.2f} req/s"
    assert rows["completed requests"][0] == str(summary["requests"]["completed"])
    assert rows["error ratio"][0] == f"{summary['requests']['error_ratio']:.4f}"
    assert rows["offered rate"][0] == f"{summary['load']['rate_rps']:g} req/s"
    for name, check in by_target.items():
        row = rows[figure.get(name, name)]
        assert row == [check["measured"], check["threshold"], "PASS" if check["passed"] else "FAIL"]
    assert summary["env"] == "prod" and summary["targets"]["latency_p99_ms"] == 200
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_slo_tab_live_then_final_equals_summary_json(model_server, tmp_path: Path, workers: int):
    extra = ["--workers", str(workers), "--master-port", str(free_port())] if workers else []
    with running_dashboard(model_server, tmp_path / "reports", *extra) as url:
        before = slo_rows(url)
        assert before["state"][0] == "not started"
        assert_prod_targets(before)
        if workers:  # Locust's start needs the workers connected
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/worker-count").json().get("worker_count", 0) < workers:
                assert time.monotonic() < deadline, "workers did not connect"
                time.sleep(0.5)
        started = httpx.post(
            f"{url}/swarm", data={"user_count": 8, "spawn_rate": 8, "host": model_server}
        )
        assert started.json()["success"], started.text
        live = wait_rows(url, lambda r: int(r.get("completed requests", ["0"])[0]) >= 40)
        assert live["state"][0] == "running (live)" and live["verdict"][0] == "so far"
        assert_prod_targets(live)
        assert ms(live["latency p99"][0]) > 0 and ms(live["latency max"][0]) >= ms(
            live["latency p50"][0]
        )
        assert live["offered rate"][0] == "40 req/s"
        assert live["generators"][0] == (f"{workers} workers" if workers else "1 process")
        assert httpx.post(f"{url}/stop", timeout=60).json()["success"]
        final = slo_rows(url)
        download = httpx.get(f"{url}{CSV_PATH}")
    summary = assert_final_is_the_summary(final)
    assert summary["requests"]["completed"] >= 40
    assert summary["load"]["worker_processes"] == workers
    if workers:
        assert [g["of"] for g in summary["generators"]] == [2, 2]
        completed = [g["completed"] for g in summary["generators"]]
        assert sum(completed) == summary["requests"]["completed"]
    # Download Data: the same rows as a CSV.
    assert download.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(download.text)))
    assert table[0] == ["Figure", "Value", "Target", "Verdict"]
    assert {r[0]: r[1:] for r in table[1:]} == final


@pytest.mark.slow
def test_dashboard_in_headless_chromium(chromium: str, model_server, tmp_path: Path):
    with running_dashboard(model_server, tmp_path / "reports") as url:
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("dashboard_browser.py")),
                url,
                chromium,
                str(tmp_path / "profile"),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    # What the SLO tab showed in the browser: targets, then live figures, then the verdict.
    assert seen["targets"]["latency p99"] == "<= 200 ms"
    assert seen["targets"]["latency avg"] == "<= 120 ms"
    live = seen["live"]
    assert live["state"][0] == "running (live)"
    assert int(live["completed requests"][0]) >= 50 and ms(live["latency p99"][0]) > 0
    assert live["latency avg"][2] in ("PASS", "FAIL")  # a verdict per target while it runs
    summary = assert_final_is_the_summary(seen["final"])
    assert seen["csv_href"] == "." + CSV_PATH
    report_dir = Path(seen["final"]["report"][0])
    for shot in ("dashboard-live.png", "dashboard-final.png"):
        assert (report_dir / shot).read_bytes().startswith(b"\x89PNG")
    assert summary["requests"]["completed"] >= 50
