"""The scale-out ramp's pieces (bench.scaleout): when each request is due on a rising rate, the
per-second latency and errors, one sample of the revision's pods and PodAutoscaler, and the
words the report says."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from kserve_gitops.bench import scaleout
from kserve_gitops.e2e.traffic import Outcome
from tests.bench.cluster_record import record


def test_the_ramp_offers_the_integral_of_its_rate() -> None:
    ramp = scaleout.Ramp(10, 110, 100)
    due = [ramp.due(i) for i in range(7000)]
    assert due == sorted(due) and due[0] == 0
    sent = sum(d < 100 for d in due)
    assert sent == pytest.approx((10 + 110) / 2 * 100, abs=1)  # 6000 over the 100 s
    first, last = sum(d < 1 for d in due), sum(99 <= d < 100 for d in due)
    assert (first, last) == (pytest.approx(10, abs=1), pytest.approx(109, abs=1))
    assert scaleout.Ramp(20, 20, 10).due(40) == 2.0  # a flat ramp is a fixed rate


@pytest.mark.parametrize("args", [(0, 10, 5), (20, 10, 5), (10, 20, 0)])
def test_a_ramp_that_cannot_be_offered_is_refused(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="expected 0 < from <= to"):
        scaleout.Ramp(*args)


def test_per_second_latency_and_errors_by_the_second_requests_were_due() -> None:
    outcomes = [
        Outcome(0.1, 0.010, 200, (1,)),
        Outcome(0.5, 0.030, 200, (1,)),
        Outcome(0.9, None, None, None, "ReadTimeout"),
        Outcome(2.2, 0.002, 503, None),
        Outcome(2.4, 0.004, 200, (1,)),
    ]
    rows = scaleout.per_second(outcomes)
    assert [r["t"] for r in rows] == [0, 1, 2]  # a second with no request is still a row
    assert rows[0]["sent"] == 3 and rows[0]["failed"] == 1
    assert rows[0]["p50_ms"] == 20.0 and rows[0]["p99_ms"] == pytest.approx(29.8)
    assert rows[1] == {"t": 1, "sent": 0, "failed": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    assert rows[2]["failed"] == 1 and rows[2]["p50_ms"] == 4.0  # only answered requests count


class FakePaths:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.asked: list[tuple[str, ...]] = []

    def get(self, *args: str) -> dict[str, Any]:
        self.asked.append(args)
        return {"items": self.items}


def pod(ready: bool) -> dict[str, Any]:
    status = "True" if ready else "False"
    return {"kind": "Pod", "status": {"conditions": [{"type": "Ready", "status": status}]}}


def test_a_sample_counts_ready_pods_and_reads_the_podautoscaler() -> None:
    pa = {"kind": "PodAutoscaler", "status": {"desiredScale": 3, "actualScale": 2}}
    paths = FakePaths([pod(True), pod(False), pod(True), pa])
    got = scaleout.sample(paths, "models", "rev-1", 12.345)  # type: ignore[arg-type]
    assert got == {"t": 12.35, "ready": 2, "pods": 3, "desired": 3, "actual": 2}
    assert paths.asked == [
        ("pods,podautoscalers", "-n", "models", "-l", "serving.knative.dev/revision=rev-1")
    ]
    alone = scaleout.sample(FakePaths([pod(True)]), "m", "r", 0)  # type: ignore[arg-type]
    assert (alone["desired"], alone["actual"]) == (None, None)


def test_the_summary_says_what_was_offered_and_reached() -> None:
    words = " ".join(scaleout.summary(record()["scaleout"]))
    assert "Offered 10 -> 40 req/s over 3 s via `activator`" in words
    assert "at most 1, first reached at 1 s; the PodAutoscaler's desired scale reached 1" in words
    assert "Worst second: p99 1500.0 ms at 0 s" in words


class Answering(BaseHTTPRequestHandler):
    """A predictor stand-in: every V1 prediction answered, the headers it got kept."""

    seen: ClassVar[list[str]] = []

    def log_message(self, *_args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Answering.seen.append(self.headers.get("Knative-Serving-Revision", ""))
        body = json.dumps({"predictions": [0]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RampPaths(FakePaths):
    """ClusterPaths as the ramp uses them: the path opened, its headers, the revision."""

    def __init__(self, url: str) -> None:
        pa = {"kind": "PodAutoscaler", "status": {"desiredScale": 1, "actualScale": 1}}
        super().__init__([pod(True), pa])
        self.url = url
        self.headers: dict[str, dict[str, str]] = {}

    def open(self, _model: str, _namespace: str, path: str) -> str:
        self.headers[path] = {"Knative-Serving-Revision": "rev-1"}
        return self.url

    def revision(self, _model: str, _namespace: str) -> str:
        return "rev-1"


def test_the_ramp_runs_through_the_opened_path_and_samples_every_second() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        paths = RampPaths(f"http://127.0.0.1:{server.server_address[1]}")
        got = scaleout.run(
            paths,  # type: ignore[arg-type]
            "sklearn-iris",
            "models",
            "activator",
            scaleout.Ramp(5, 20, 3),
            ((5.1, 3.5, 1.4, 0.2),),
            10.0,
            lambda _: None,
        )
    finally:
        server.shutdown()
    assert got["sent"] == 38 and got["failed"] == 0  # (5 + 20) / 2 * 3 = 37.5, none after 3 s
    assert set(Answering.seen) == {"rev-1"}  # the path's headers on every request
    assert [s["t"] for s in got["samples"]] == pytest.approx([0, 1, 2], abs=0.5)
    assert all(s["ready"] == 1 and s["desired"] == 1 for s in got["samples"])
    sent = [r["sent"] for r in got["per_second"]]
    assert sent == sorted(sent) and sent[0] < sent[-1]  # the rate rises
    assert got["generator_cpu_pct"] > 0
