"""Open-loop load test: numbers consistent with Locust's own stats, SLO failures on a slowed
server, coordinated omission (a stall shows up in every request that was due during it), wrong
predictions and Host-header routing, and the locustfile under the plain locust command."""

from __future__ import annotations

from kserve_gitops.load import openloop

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from hdrh.histogram import HdrHistogram

from kserve_gitops.serving import payloads, process
from tests import REPO

# A stand-in server for what KServe's cannot do on demand: stall every request for a while
# (one global lock, like a stop-the-world pause), answer wrong, or route on the Host header or
# another header (Knative's activator routes on Knative-Serving-Revision).
# It serves the real model's predictions on the V1 path.
STUB_SERVER = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import joblib, numpy

port, stall_at, stall_s, wrong, host, need = sys.argv[1:7]
stall_at, stall_s = int(stall_at), float(stall_s)
model = joblib.load(sys.argv[7])
lock, count = threading.Lock(), [0]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One segment per response, no Nagle: no delayed-ACK stalls that are not the test's.
    wbufsize, disable_nagle_algorithm = 65536, True
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            count[0] += 1
            if count[0] == stall_at:
                time.sleep(stall_s)
        name, _, value = need.partition(": ")
        routed = not need or self.headers.get(name) == value
        if (host and self.headers.get("Host") != host) or not routed:
            status, doc = 404, {"error": "no route for host"}
        else:
            got = model.predict(numpy.array(body["instances"])).tolist()
            status, doc = 200, {"predictions": [2 for _ in got] if wrong == "1" else got}
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
"""


@pytest.fixture
def lenient_slo(tmp_path: Path) -> str:
    """SLO targets a busy shared machine always meets: these tests check the flow, not speed."""
    path = tmp_path / "lenient-slo.yaml"
    path.write_text(
        "defaults:\n"
        "  load: {rate: 80, duration: 2s, protocol: v1}\n"
        "  targets: {latency_avg_ms: 2000, latency_max_ms: 10000, throughput_min_rps: 40,\n"
        "            error_ratio_max: 0}\n"
    )
    return str(path)


def start_stub(
    tmp_path: Path,
    *,
    stall_at: int = 0,
    stall_s: float = 0,
    wrong: bool = False,
    host: str = "",
    header: str = "",
) -> tuple[str, subprocess.Popen]:
    script = tmp_path / "stub" / "server.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(STUB_SERVER)
    port = process.free_port()
    model = REPO.models / "sklearn-iris" / "v1" / "model.joblib"
    args = [str(port), str(stall_at), str(stall_s), "1" if wrong else "0", host, header, str(model)]
    proc = subprocess.Popen([sys.executable, str(script), *args])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}", proc
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("stub server did not start")


def run_cli(kgops, reports: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = kgops("loadtest", "--reports", str(reports), "--progress", "1", *args)
    assert "Traceback" not in result.stderr, result.stderr
    [report_dir] = [p for p in reports.iterdir() if not p.name.startswith(".")]
    return result, json.loads((report_dir / "summary.json").read_text())


def count_over(histogram, threshold_ms: float) -> int:
    return sum(
        item.count_at_value_iterated_to
        for item in histogram.get_recorded_iterator()
        if item.value_iterated_to > threshold_ms * 1000
    )


def test_payloads_carry_the_reference_predictions():
    for protocol in payloads.PROTOCOLS:
        cases = {c.name: c for c in payloads.load_cases(REPO, protocol)}
        assert {n: c.expected for n, c in cases.items()} == {"iris-one": [0], "iris-two": [1, 1]}
    v1 = {c.name: c for c in payloads.load_cases(REPO, "v1")}
    v2 = {c.name: c for c in payloads.load_cases(REPO, "v2")}
    for name, case in v1.items():
        # Both protocols send the same rows.
        assert json.loads(case.body)["instances"] == json.loads(v2[name].body)["inputs"][0]["data"]
    two = v1["iris-two"]
    assert payloads.check_response(two, 200, '{"predictions": [1, 1]}') is None
    assert "wrong prediction" in payloads.check_response(two, 200, '{"predictions": [1, 2]}')
    assert "HTTP 503" in payloads.check_response(two, 503, "busy")
    assert "unexpected response" in payloads.check_response(two, 200, '{"outputs": []}')
    v2_two = v2["iris-two"]
    v2_ok = '{"outputs": [{"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}]}'
    assert payloads.check_response(v2_two, 200, v2_ok) is None


def test_plan_slots_are_due_at_fixed_intervals_and_end_with_the_plan():
    plan = openloop.Plan(rate=50, total=3)
    assert [plan.claim(), plan.claim(), plan.claim(), plan.claim()] == [0.0, 0.02, 0.04, None]
    assert plan.outstanding == 3 and not plan.finished.is_set()
    for due in (0.0, 0.02, 0.04):
        plan.record(due, due + 0.001, due + 0.005, ok=True)
    assert plan.finished.is_set() and plan.outstanding == 0
    rec = plan.recorder
    # Latency from the scheduled time = lag + service time, request by request.
    assert rec.scheduled_sum_us == 3 * 5000 and rec.service_sum_us == 3 * 4000
    assert rec.lag.get_max_value() == pytest.approx(1000, rel=0.001)


def test_achieved_rate_counts_successes_over_the_send_window():
    def run(lag_of, ok_of=lambda i: True) -> float:  # 3 s at 100/s
        plan = openloop.Plan(rate=100, total=300)
        for i in range(300):
            due = plan.claim()
            plan.recent_lags.append(lag_of(i))  # what wait_until records on each send
            plan.record(due, due + lag_of(i), due + lag_of(i) + 0.01, ok=ok_of(i))
        return plan.achieved_rate()

    assert run(lambda i: 0.009) == pytest.approx(100)  # late by less than an interval
    assert run(lambda i: 0.5 if i == 299 else 0) == pytest.approx(100)  # one late request
    assert run(lambda i: 2.0 if i >= 200 else 0) == pytest.approx(300 / 5)  # 2 s behind at the end
    assert run(lambda i: 0, ok_of=lambda i: i % 2 == 0) == pytest.approx(50)  # half failed


def test_stopping_an_unbounded_plan_finishes_once_in_flight_requests_end():
    plan = openloop.Plan(rate=10, total=None)
    due = plan.claim()
    plan.stop()
    assert plan.claim() is None and not plan.finished.is_set()
    plan.record(due, due, due + 0.1, ok=True)
    assert plan.finished.is_set()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_summary_is_consistent_with_locust_stats(
    model_server, kgops, tmp_path: Path, protocol: str, lenient_slo: str
):
    result, summary = run_cli(
        kgops,
        tmp_path / "r",
        "--slo-config",
        lenient_slo,
        "--target",
        model_server,
        "--protocol",
        protocol,
        "--rate",
        "80",
        "--duration",
        "2s",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report_dir = next(p for p in (tmp_path / "r").iterdir() if not p.name.startswith("."))
    rows = {r["Name"]: r for r in csv.DictReader((report_dir / "locust_stats.csv").open())}
    total = rows["Aggregated"]
    assert set(rows) == {f"{protocol} iris-one", f"{protocol} iris-two", "Aggregated"}

    assert summary["requests"]["completed"] == 160 == int(total["Request Count"])
    assert summary["requests"]["failures"] == 0 == int(total["Failure Count"])
    assert summary["locust"]["requests"] == 160
    assert summary["throughput_rps"] == pytest.approx(80, rel=0.05)
    assert summary["verdict"] == "PASS"

    # Our service time wraps Locust's (same request, timed a little further out).
    service, locust_avg = summary["service_time_ms"], float(total["Average Response Time"])
    assert locust_avg <= service["avg"] <= locust_avg + 2
    assert float(total["Max Response Time"]) * 0.999 <= service["max"]
    assert service["max"] <= float(total["Max Response Time"]) + 5
    # Latency from the scheduled time includes the service time, request by request.
    latency = summary["latency_ms"]
    for key in ("avg", "p50", "p95", "p99", "max"):
        assert latency[key] >= service[key]
    assert sum(r["completed"] for r in summary["timeline"]) == 160
    assert (report_dir / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert "<html" in (report_dir / "locust.html").read_text().lower()
    assert "done" in result.stdout and "p99" in result.stdout  # progress lines
    assert "| PASS" in result.stdout and str(report_dir.name) in result.stdout


@pytest.mark.slow
def test_injected_server_delay_fails_the_run(kgops, tmp_path: Path):
    # A real delay in KServe's serving path (helper middleware), over the 120 ms average target.
    with process.running(
        REPO, extra_args=["--fault-delay-ms", "150", "--access-log", "false"]
    ) as slow:
        result, summary = run_cli(
            kgops, tmp_path, "--target", slow.url, "--rate", "80", "--duration", "2s"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["verdict"] == "FAIL"
    failed = {c["target"] for c in summary["checks"] if not c["passed"]}
    assert "latency avg" in failed and "error ratio" not in failed
    assert summary["latency_ms"]["avg"] >= 150 and summary["requests"]["failures"] == 0
    rows = [[cell.strip() for cell in line.split("|")] for line in result.stdout.splitlines()]
    assert any(row[0] == "latency avg" and row[-1] == "FAIL" for row in rows)


@pytest.mark.slow
def test_stall_is_charged_to_every_request_due_during_it(kgops, tmp_path: Path):
    """Coordinated omission: 2 users, 100 req/s, the server stalls 1 s once at t ~ 1 s.

    About 100 requests fall due during the stall. Their latency from the scheduled time spreads
    from ~1 s down to ~0; the service time of all but the two requests stuck in the stall stays
    small, because the late requests are sent after the stall ends.
    """
    url, proc = start_stub(tmp_path, stall_at=100, stall_s=1.0)
    try:
        result, summary = run_cli(
            kgops,
            tmp_path / "r",
            "--target",
            url,
            "--users",
            "2",
            "--rate",
            "100",
            "--duration",
            "3s",
        )
    finally:
        proc.kill()
    assert result.returncode == 1
    assert summary["requests"] == {
        "completed": 300,
        "failures": 0,
        "unfinished": 0,
        "error_ratio": 0.0,
    }
    scheduled = HdrHistogram.decode(summary["histograms_us"]["scheduled"])
    service = HdrHistogram.decode(summary["histograms_us"]["service"])
    assert scheduled.get_total_count() == service.get_total_count() == 300
    assert count_over(scheduled, 250) >= 60  # ~75 requests were due in the first 750 ms
    assert count_over(service, 250) <= 2  # only the two requests caught in the stall
    assert summary["latency_ms"]["max"] >= 900
    assert summary["latency_ms"]["avg"] >= 100 > 20 >= summary["service_time_ms"]["avg"]
    assert summary["timeline"][1]["p99_ms"] >= 800  # the stall sits in the second it happened
    assert summary["timeline"][0]["p99_ms"] < 500  # before it: no stall (noise allowed)
    failed = {c["target"] for c in summary["checks"] if not c["passed"]}
    assert {"latency avg", "latency max"} <= failed


@pytest.mark.slow
def test_wrong_predictions_are_failures(kgops, tmp_path: Path):
    url, proc = start_stub(tmp_path, wrong=True)
    try:
        result, summary = run_cli(
            kgops, tmp_path / "r", "--target", url, "--rate", "80", "--duration", "1s"
        )
    finally:
        proc.kill()
    assert result.returncode == 1
    assert summary["requests"]["failures"] == summary["requests"]["completed"] == 80
    assert summary["locust"]["failures"] == 80
    assert any("wrong prediction" in error for error in summary["locust"]["errors"])
    assert summary["requests"]["error_ratio"] == 1.0


@pytest.mark.slow
def test_host_header_reaches_the_server(kgops, tmp_path: Path, lenient_slo: str):
    host = "sklearn-iris.kserve-test.example.com"
    url, proc = start_stub(tmp_path, host=host)
    try:
        routed, summary = run_cli(
            kgops,
            tmp_path / "a",
            "--slo-config",
            lenient_slo,
            "--target",
            url,
            "--host-header",
            host,
            "--rate",
            "80",
            "--duration",
            "1s",
        )
        unrouted, unrouted_summary = run_cli(
            kgops,
            tmp_path / "b",
            "--slo-config",
            lenient_slo,
            "--target",
            url,
            "--rate",
            "80",
            "--duration",
            "1s",
        )
    finally:
        proc.kill()
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert summary["host_header"] == host and summary["requests"]["failures"] == 0
    assert unrouted.returncode == 1 and "FAIL" in unrouted.stdout
    assert unrouted_summary["requests"]["failures"] == 80


@pytest.mark.slow
def test_more_headers_reach_the_server(kgops, tmp_path: Path, lenient_slo: str):
    header = "Knative-Serving-Revision: sklearn-iris-predictor-00001"
    url, proc = start_stub(tmp_path, header=header)
    common = ("--slo-config", lenient_slo, "--target", url, "--rate", "80", "--duration", "1s")
    try:
        routed, summary = run_cli(kgops, tmp_path / "a", *common, "--header", header)
        # Distributed: the master sends the headers to its workers with the plan.
        port = str(process.free_port())
        spread = ("--workers", "2", "--master-port", port, "--header", header)
        shared, shared_summary = run_cli(kgops, tmp_path / "c", *common, *spread)
        unrouted, unrouted_summary = run_cli(kgops, tmp_path / "b", *common)
        refused = kgops("loadtest", *common, "--header", "no colon")
    finally:
        proc.kill()
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert summary["headers"] == {"Knative-Serving-Revision": "sklearn-iris-predictor-00001"}
    assert summary["requests"]["failures"] == 0
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert shared_summary["load"]["worker_processes"] == 2
    assert shared_summary["requests"]["failures"] == 0
    assert unrouted.returncode == 1 and unrouted_summary["requests"]["failures"] == 80
    assert refused.returncode == 2 and "expected 'NAME: VALUE'" in refused.stderr


@pytest.mark.slow
def test_locustfile_runs_under_the_locust_command(model_server, tmp_path: Path):
    """A bounded plan (KGOPS_REQUESTS) ends the run, not a wall-clock --run-time: on a busy
    machine the run takes longer and still sends exactly the planned requests."""
    locustfile = str(REPO.root / "loadtests" / "locustfile.py")
    rate, planned, hang_s = 30, 40, 300  # hang_s only ends a run that hangs
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locustfile,
        "--headless",
        "--users",
        "8",
        "--spawn-rate",
        "100",
        "--run-time",
        f"{hang_s}s",
        "--host",
        model_server,
        "--json-file",
        str(tmp_path / "plain"),
        "V2User",
    ]
    result = subprocess.run(
        cmd,
        env={**os.environ, "KGOPS_RATE": str(rate), "KGOPS_REQUESTS": str(planned)},
        capture_output=True,
        text=True,
        timeout=hang_s + 60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--run-time limit reached" not in result.stderr  # the plan's end stopped it
    # The final stats, written at shutdown (the --csv files are a snapshot of up to 1 s before).
    entries = json.loads((tmp_path / "plain.json").read_text())
    assert sum(e["num_requests"] for e in entries) == planned
    assert sum(e["num_failures"] for e in entries) == 0
    # Paced by the plan: request i is not sent before t0 + i/rate, t0 being after the test
    # start (Locust logs "Ramping to" right after it), so the last request comes at least
    # (planned - 1)/rate after that however slow the machine; unpaced users would send all 40
    # within milliseconds.
    ramp = re.search(r"^\[([\d-]+ [\d:]+,\d+)\] .*Ramping to", result.stderr, re.M)
    assert ramp, result.stderr[-2000:]
    started = datetime.strptime(ramp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    last = max(e["last_request_timestamp"] for e in entries)
    assert last - started >= (planned - 1) / rate
    assert "latency from scheduled send time" in result.stdout
    assert f"over {planned} requests, 0 errors" in result.stdout


@pytest.mark.slow
def test_dashboard_serves_on_the_web_port(model_server):
    port = process.free_port()
    ui = ["--ui", "--web-port", str(port), "--target", model_server]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kserve_gitops.load.loadtest", *ui],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO.root,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("dashboard did not come up")
        assert page.status_code == 200 and "locust" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_demo_end_to_end_on_a_fresh_copy(repo_copy: Path, kgops, lenient_slo: str):
    # No model artifact: the demo must train it, validate, serve, load-test and clean up.
    for artifact in (repo_copy / "models" / "sklearn-iris" / "v1").glob("*"):
        artifact.unlink()
    result = kgops(
        "demo", "--duration", "2s", "--slo-config", lenient_slo, root=repo_copy, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (repo_copy / "models" / "sklearn-iris" / "v1" / "model.joblib").is_file()
    assert "validation passed" in result.stdout
    assert "server stopped" in result.stdout and "demo PASSED" in result.stdout
    [report_dir] = (repo_copy / "reports").iterdir()
    assert f"report: reports/{report_dir.name}" in result.stdout
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["verdict"] == "PASS" and summary["env"] == "dev"
    assert summary["requests"]["completed"] == 160
