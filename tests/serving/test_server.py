"""The local KServe server (kgops serve), as clients see it over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kserve_gitops.serving import client, process
from tests import REPO

pytestmark = pytest.mark.slow

MODEL = "sklearn-iris"
V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"
JSON = {"content-type": "application/json"}


def v2(shape: list[int], data: list, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": data}]}


def test_v1_predicts_the_reference_rows(model_server: str):
    one = httpx.post(model_server + V1, json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert one.status_code == 200 and one.json() == {"predictions": [0]}
    two = httpx.post(
        model_server + V1, json={"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
    )
    assert two.json() == {"predictions": [1, 1]}


def test_v2_predicts_the_reference_rows(model_server: str):
    response = httpx.post(
        model_server + V2, json=v2([2, 4], [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6])
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == MODEL
    assert body["outputs"][0]["shape"] == [2]
    assert body["outputs"][0]["datatype"] == "INT64"
    assert body["outputs"][0]["data"] == [1, 1]
    fp64_int = httpx.post(model_server + V2, json=v2([1, 4], [5, 3, 1, 0], "INT64"))
    assert fp64_int.json()["outputs"][0]["data"] == [0]


def test_json_body_without_json_content_type_is_accepted(model_server: str):
    # curl -d sends application/x-www-form-urlencoded; upstream answers that with a 500.
    response = httpx.post(
        model_server + V1,
        content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {"predictions": [0]}


def test_health_ready_and_metadata(model_server: str):
    assert httpx.get(model_server + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(model_server + "/v2/health/live").status_code == 200
    assert httpx.get(f"{model_server}/v2/models/{MODEL}/ready").json() == {
        "name": MODEL,
        "ready": True,
    }
    assert httpx.get(f"{model_server}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    assert MODEL in httpx.get(model_server + "/v1/models").json()["models"]
    meta = httpx.get(f"{model_server}/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


def test_metrics_count_kserve_requests(model_server: str):
    httpx.post(model_server + V1, json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    text = httpx.get(model_server + "/metrics").text
    counts = [
        line for line in text.splitlines() if line.startswith("request_predict_seconds_count")
    ]
    assert counts and f'model_name="{MODEL}"' in counts[0]
    assert float(counts[0].split()[-1]) >= 1
    assert "request_preprocess_seconds_bucket" in text


# (name, path, body, expected status, words the error must contain)
BAD_REQUESTS = [
    ("malformed JSON", V1, b'{"instances": [[5.1, 3.5', 400, "Unrecognized request format"),
    ("missing instances", V1, b'{"rows": [[5.1, 3.5, 1.4, 0.2]]}', 400, 'missing "instances"'),
    ("body not an object", V1, b"[[5.1, 3.5, 1.4, 0.2]]", 400, "JSON object"),
    ("instances not a list", V1, b'{"instances": 5}', 400, "to be a list"),
    ("empty instances", V1, b'{"instances": []}', 400, "non-empty list"),
    (
        "too few features",
        V1,
        b'{"instances": [[5.1, 3.5, 1.4]]}',
        400,
        "expected 4 features, got 3",
    ),
    (
        "ragged rows",
        V1,
        b'{"instances": [[5.1, 3.5, 1.4, 0.2], [1, 2]]}',
        400,
        "instances[1]: expected 4 features, got 2",
    ),
    ("non-numeric", V1, b'{"instances": [[5.1, "abc", 1.4, 0.2]]}', 400, "instances[0][1]"),
    ("null value", V1, b'{"instances": [[null, 3.5, 1.4, 0.2]]}', 400, "got null"),
    ("boolean value", V1, b'{"instances": [[true, true, true, true]]}', 400, "got true"),
    ("row not a list", V1, b'{"instances": [5.1]}', 400, "instances[0]: expected a list"),
    ("unknown model v1", "/v1/models/nope:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "nope"),
    ("malformed JSON v2", V2, b'{"inputs": [', 422, "JSON decode error"),
    ("missing inputs v2", V2, b'{"id": "1"}', 422, "inputs"),
    ("empty inputs v2", V2, json.dumps({"inputs": []}).encode(), 400, "exactly one tensor"),
    (
        "shape disagrees with data",
        V2,
        json.dumps(v2([2, 4], [6.8, 2.8, 4.8, 1.4])).encode(),
        400,
        "data does not fit shape [2, 4]",
    ),
    (
        "wrong feature count v2",
        V2,
        json.dumps(v2([1, 3], [6.8, 2.8, 4.8])).encode(),
        400,
        "shape must be [N, 4], got [1, 3]",
    ),
    ("one-dimensional v2", V2, json.dumps(v2([4], [5.1, 3.5, 1.4, 0.2])).encode(), 400, "got [4]"),
    (
        "non-numeric v2",
        V2,
        json.dumps(v2([1, 4], ["a", "b", "c", "d"])).encode(),
        400,
        "could not convert",
    ),
    (
        "BYTES tensor",
        V2,
        json.dumps(v2([1, 4], ["a", "b", "c", "d"], "BYTES")).encode(),
        400,
        "datatype must be numeric",
    ),
    (
        "unknown model v2",
        "/v2/models/nope/infer",
        json.dumps(v2([1, 4], [1, 2, 3, 4])).encode(),
        404,
        "nope",
    ),
    (
        "oversized body",
        V1,
        json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 60_000}).encode(),
        413,
        "over the 1048576-byte limit",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_is_a_4xx_with_a_helpful_json_error(
    model_server: str, path: str, body: bytes, status: int, words: str
):
    response = httpx.post(model_server + path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    # KServe's own errors are {"error": ...}; FastAPI's request validation is {"detail": [...]}.
    assert words in (body.get("error") or json.dumps(body["detail"]))
    # ... and the server keeps serving.
    ok = httpx.post(model_server + V1, json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert ok.json() == {"predictions": [0]}


def test_chunked_oversized_body_is_refused(model_server: str):
    def chunks():
        for _ in range(40):
            yield b" " * 32_768  # 1.3 MB of whitespace, no content-length

    response = httpx.post(model_server + V1, content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert "chunked" in response.json()["error"]


def test_chunked_small_body_is_served(model_server: str):
    response = httpx.post(
        model_server + V1,
        content=iter([b'{"instances": ', b"[[5.1, 3.5, 1.4, 0.2]]}"]),
        headers=JSON,
    )
    assert response.json() == {"predictions": [0]}


def test_predict_proba_answers_probabilities():
    with process.running(REPO, extra_args=["--predict-proba", "--access-log", "false"]) as srv:
        v1 = httpx.post(
            srv.url + V1, json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]]}
        )
        rows = v1.json()["predictions"]
        assert [len(row) for row in rows] == [3, 3]
        assert [sum(row) for row in rows] == pytest.approx([1.0, 1.0])
        assert [row.index(max(row)) for row in rows] == [0, 1]
        response = httpx.post(srv.url + V2, json=v2([1, 4], [5.1, 3.5, 1.4, 0.2]))
        output = response.json()["outputs"][0]
        assert output["shape"] == [1, 3] and output["datatype"] == "FP64"
        assert client.parse_predictions("v2", response.json())[0] == pytest.approx(rows[0])
        meta = httpx.get(f"{srv.url}/v2/models/{MODEL}").json()
        assert meta["outputs"][0]["shape"] == [-1, 3]


def test_two_workers_share_the_port_and_apply_the_guard():
    args = ["--max-body-bytes", "2000", "--fault-first", "1", "--access-log", "false"]
    with process.running(REPO, workers=2, extra_args=args) as srv:
        # A new connection per request (no shared client), so either worker may accept it; an
        # unguarded worker would answer 200 to the oversized body and never inject a fault.
        row = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
        responses = [httpx.post(srv.url + V1, json=row) for _ in range(20)]
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and 1 <= codes.count(503) <= 2
        assert all(r.json() == {"predictions": [0]} for r in responses if r.status_code == 200)
        big = {"instances": row["instances"] * 200}
        assert {httpx.post(srv.url + V1, json=big).status_code for _ in range(20)} == {413}
        assert srv.log_text().count("Started child process") == 2


def test_fault_injection_fails_the_first_requests_then_serves():
    args = ["--fault-first", "2", "--fault-status", "502", "--access-log", "false"]
    with process.running(REPO, extra_args=args) as srv:
        codes = [
            httpx.post(srv.url + V1, json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code
            for _ in range(3)
        ]
        assert codes == [502, 502, 200]
        # Health checks are never faulted: the pod must stay ready.
        assert httpx.get(srv.url + "/v2/health/ready").status_code == 200


def test_ready_line_and_clean_shutdown():
    srv = process.start_background(REPO, extra_args=["--access-log", "false"])
    try:
        assert f"{MODEL} ready: {srv.url} (V1 {V1}, V2 {V2})" in _wait_for_line(srv, "ready:")
    finally:
        code = srv.stop()
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/v2/health/ready")


def _wait_for_line(srv: process.LocalServer, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in srv.log_text().splitlines():
            if needle in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no line with {needle!r} in:\n{srv.log_text()[-2000:]}")


@pytest.mark.parametrize(
    ("files", "message"),
    [([], "no .joblib/.pkl/.pickle file"), (["a.joblib", "b.pkl"], "more than one model file")],
)
def test_model_dir_must_hold_exactly_one_model(tmp_path: Path, files: list[str], message: str):
    for name in files:
        shutil.copy(REPO.models / MODEL / "v1" / "model.joblib", tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-m", "kserve_gitops.serving.server", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr and "cannot load model 'sklearn-iris'" in result.stderr
