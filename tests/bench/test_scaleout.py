"""The scale-out ramp's pieces (bench.scaleout): the ramp refused when it cannot be offered, the
per-second rows, one sample of the revision's pods and PodAutoscaler, the words the report says,
and one ramp through Locust."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import joblib
import pytest

from kserve_gitops.base.tools import Runner
from kserve_gitops.bench import scaleout
from tests import REPO
from tests.bench.cluster_record import record


@pytest.mark.parametrize("args", [(0, 10, 5), (20, 10, 5), (10, 20, 0)])
def test_a_ramp_that_cannot_be_offered_is_refused(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="expected 0 < from <= to"):
        scaleout.ramp(*args)


def test_per_second_rows_are_the_load_tests_timeline() -> None:
    timeline = [
        {"t": 0, "p50_ms": 20.0, "p95_ms": 29.0, "p99_ms": 29.8, "max_ms": 30.0, "completed": 2,
         "failed": 1},
        {"t": 1, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0, "max_ms": 0, "completed": 0, "failed": 0},
    ]  # fmt: skip
    rows = scaleout.per_second(timeline)
    assert rows == [
        {"t": 0, "completed": 2, "failed": 1, "p50_ms": 20.0, "p99_ms": 29.8},
        {"t": 1, "completed": 0, "failed": 0, "p50_ms": 0, "p99_ms": 0},
    ]


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
    doc = record()["scaleout"]
    words = " ".join(scaleout.summary(doc))
    assert "Offered 10 -> 40 req/s over 3 s via `activator`" in words
    assert (
        "desired scale stayed at 1" in words
        and "Ready pods: at most 1, first reached at 1 s" in words
    )
    assert "Worst second: p99 1500.0 ms at 0 s" in words
    doc["samples"][2] |= {"desired": 3}
    doc["samples"].insert(0, {"t": -1.0, "ready": 0, "pods": 0, "desired": 2, "actual": 0})
    words = " ".join(scaleout.summary(doc))
    # Before slot 0 does not count; the rate offered when the KPA asked: 10 + 10 * 2.
    assert "asked for more than 1 pod(s) at 2 s (offered 30 req/s then) and for 3 at 2 s" in words


class Answering(BaseHTTPRequestHandler):
    """A predictor stand-in: every V1 prediction answered by the model, the headers it got
    kept (the load test checks each answer against the payload's reference prediction)."""

    seen: ClassVar[list[str]] = []
    model: ClassVar[Any] = None

    def log_message(self, *_args: object) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Answering.seen.append(self.headers.get("Knative-Serving-Revision", ""))
        predictions = Answering.model.predict(request["instances"]).tolist()
        body = json.dumps({"predictions": predictions}).encode()
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
    """Locust with a worker process, ramping against a predictor stand-in, while the sampler
    reads the (fake) revision every second."""
    Answering.model = joblib.load(REPO.models / "sklearn-iris" / "v1" / "model.joblib")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        paths = RampPaths(f"http://127.0.0.1:{server.server_address[1]}")
        got = scaleout.run(
            paths,  # type: ignore[arg-type]
            Runner(echo=lambda _: None),
            "dev",
            "sklearn-iris",
            "models",
            "activator",
            scaleout.ramp(5, 20, 3),
            1,
            lambda _: None,
        )
    finally:
        server.shutdown()
    assert got["sent"] == 38 and got["failed"] == 0  # (5 + 20) / 2 * 3 = 37.5
    assert set(Answering.seen) == {"rev-1"}  # the path's headers on every request
    # Sampled from before Locust started until it ended; t counts from its first slot.
    ts = [s["t"] for s in got["samples"]]
    assert ts == sorted(ts) and ts[0] < 0 < 3 < ts[-1]
    assert all(s["ready"] == 1 and s["desired"] == 1 for s in got["samples"])
    done = [r["completed"] for r in got["per_second"]]
    assert sum(done) == 38 and done[0] < done[2]  # the rate rises: about 6, 12 and 18 due
    assert got["workers"] == 1 and got["generator_cpu_pct"] > 0
