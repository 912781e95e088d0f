"""Batch predictions (kgops predict) and the retrying client under it."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris

from kserve_gitops.serving import client, process
from tests import REPO

pytestmark = pytest.mark.slow

HEADER = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def iris_rows() -> list[list[float]]:
    rows = load_iris().data.tolist()
    random.Random(7).shuffle(rows)  # classes interleaved, so order mistakes change labels
    return rows


@pytest.fixture(scope="module")
def expected(iris_rows) -> list[int]:
    model = joblib.load(REPO.models / "sklearn-iris" / "v1" / "model.joblib")
    return model.predict(iris_rows).tolist()


def write_csv(path: Path, rows: list[list], header: list[str] | None = HEADER) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_every_row_is_predicted_in_input_order(
    model_server: str, kgops, tmp_path: Path, iris_rows, expected, protocol: str
):
    source = write_csv(tmp_path / "rows.csv", iris_rows)
    result = kgops(
        "predict",
        "--input",
        str(source),
        "--target",
        model_server,
        "--batch",
        "16",
        "--concurrency",
        "4",
        "--protocol",
        protocol,
    )
    assert result.returncode == 0, result.stderr
    out = read_output(tmp_path / "rows.predictions.csv")  # the default output name
    assert [int(r["line"]) for r in out] == list(range(2, 152))
    assert [[float(r[h]) for h in HEADER] for r in out] == iris_rows
    assert [int(r["prediction"]) for r in out] == expected
    assert all(r["error"] == "" for r in out)
    assert "150/150 rows (100%)" in result.stderr and "rows/s" in result.stderr


def test_headerless_input_gets_generated_column_names(model_server: str, kgops, tmp_path):
    source = write_csv(tmp_path / "plain.csv", [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]], None)
    target = tmp_path / "out" / "answers.csv"
    result = kgops(
        "predict", "--input", str(source), "--output", str(target), "--target", model_server
    )
    assert result.returncode == 0, result.stderr
    out = read_output(target)
    assert list(out[0]) == [
        "line",
        "feature_1",
        "feature_2",
        "feature_3",
        "feature_4",
        "prediction",
        "error",
    ]
    assert [(r["line"], r["prediction"]) for r in out] == [("1", "0"), ("2", "1")]


def test_malformed_rows_are_reported_by_line_and_the_rest_predicted(
    model_server: str, kgops, tmp_path: Path, iris_rows, expected
):
    rows: list[list] = [list(r) for r in iris_rows[:20]]
    rows[3][1] = "abc"  # line 5 (after the header)
    rows[7] = rows[7][:3]  # line 9
    rows[12][0] = ""  # line 14
    source = write_csv(tmp_path / "rows.csv", rows)
    result = kgops("predict", "--input", str(source), "--target", model_server, "--batch", "4")
    assert result.returncode == 1
    assert f"{source}:5: column 2: expected a number, got 'abc'" in result.stderr
    assert f"{source}:9: expected 4 values, got 3" in result.stderr
    assert f"{source}:14: column 1: expected a number, got ''" in result.stderr
    out = read_output(tmp_path / "rows.predictions.csv")
    assert len(out) == 20
    failed = {int(r["line"]) for r in out if r["error"]}
    assert failed == {5, 9, 14}
    good = [(i, r) for i, r in enumerate(out) if not r["error"]]
    assert [int(r["prediction"]) for _, r in good] == [expected[i] for i, _ in good]
    assert "17 predicted, 3 failed" in result.stderr


def test_transient_failures_are_retried_without_loss_or_duplication(
    kgops, tmp_path: Path, iris_rows, expected
):
    source = write_csv(tmp_path / "rows.csv", iris_rows)
    args = ["--fault-first", "3", "--fault-status", "503", "--access-log", "false"]
    with process.running(REPO, extra_args=args) as flaky:
        result = kgops(
            "predict",
            "--input",
            str(source),
            "--target",
            flaky.url,
            "--batch",
            "10",
            "--concurrency",
            "3",
            "--backoff",
            "0.01",
        )
        metrics = httpx.get(flaky.url + "/metrics").text
    assert result.returncode == 0, result.stderr
    assert "3 retries" in result.stderr
    out = read_output(tmp_path / "rows.predictions.csv")
    assert [int(r["line"]) for r in out] == list(range(2, 152))
    assert [int(r["prediction"]) for r in out] == expected
    # Faults are answered before the model: it predicted each of the 15 batches exactly once.
    count = next(
        line for line in metrics.splitlines() if line.startswith("request_predict_seconds_count")
    )
    assert float(count.split()[-1]) == 15


def test_exhausted_retries_fail_the_rows_but_write_the_output(kgops, tmp_path, iris_rows):
    source = write_csv(tmp_path / "rows.csv", iris_rows[:8])
    args = ["--fault-rate", "1.0", "--fault-status", "504", "--access-log", "false"]
    with process.running(REPO, extra_args=args) as down:
        result = kgops(
            "predict",
            "--input",
            str(source),
            "--target",
            down.url,
            "--batch",
            "4",
            "--retries",
            "2",
            "--backoff",
            "0.01",
        )
    assert result.returncode == 1
    out = read_output(tmp_path / "rows.predictions.csv")
    assert len(out) == 8
    assert all(r["error"].startswith("server: HTTP 504: injected fault") for r in out)
    assert "4 retries" in result.stderr  # 2 batches x 2 retries


def test_rows_the_server_refuses_are_isolated_one_by_one(model_server: str, kgops, tmp_path):
    # Three values per row pass the local check (--features 3) but not the model's.
    source = write_csv(tmp_path / "three.csv", [[5.1, 3.5, 1.4], [6.8, 2.8, 4.8]], None)
    result = kgops("predict", "--input", str(source), "--target", model_server, "--features", "3")
    assert result.returncode == 1
    out = read_output(tmp_path / "three.predictions.csv")
    assert [r["error"] for r in out] == [
        "server: HTTP 400: instances[0]: expected 4 features, got 3"
    ] * 2


def test_unusable_input_exits_2_and_writes_nothing(kgops, tmp_path: Path):
    missing = kgops("predict", "--input", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "nope.csv: cannot read" in missing.stderr
    wide = write_csv(tmp_path / "wide.csv", [[1, 2, 3, 4, 5]], ["a", "b", "c", "d", "e"])
    result = kgops("predict", "--input", str(wide))
    assert result.returncode == 2
    assert "wide.csv:1: header has 5 columns (a, b, c, d, e), expected 4 features" in result.stderr
    assert not (tmp_path / "wide.predictions.csv").exists()


# ---- the client on its own: a mock transport stands in for the network -----------------


def test_client_retries_connection_errors_then_succeeds():
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"predictions": [0, 1]})

    retries: list[int] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        got = client.predict(
            "http://model",
            "sklearn-iris",
            [[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]],
            host_header="sklearn-iris.default.example.com",
            client=http,
            policy=client.RetryPolicy(retries=3, backoff=0.001),
            on_retry=lambda error, attempt: retries.append(attempt),
        )
    assert got == [0, 1]
    assert retries == [1, 2] and len(calls) == 3
    assert calls[0].url.path == "/v1/models/sklearn-iris:predict"
    assert calls[0].headers["host"] == "sklearn-iris.default.example.com"


def test_client_does_not_retry_a_bad_request():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": "instances[0]: expected 4 features, got 3"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(client.PredictionError, match="HTTP 400: instances") as info:
        client.predict("http://model", "m", [[1, 2, 3]], client=http)
    assert info.value.status == 400 and not info.value.transient
    assert len(calls) == 1


def test_v2_bodies_and_responses_round_trip():
    body = client.v2_body([[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]])
    assert body["inputs"][0]["shape"] == [2, 4]
    assert body["inputs"][0]["data"][4:] == [6.8, 2.8, 4.8, 1.4]
    labels = {"outputs": [{"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}
    assert client.parse_predictions("v2", labels, expected=2) == [0, 1]
    proba = {
        "outputs": [{"name": "o", "shape": [2, 3], "datatype": "FP64", "data": [1, 0, 0, 0, 1, 0]}]
    }
    assert client.parse_predictions("v2", proba) == [[1, 0, 0], [0, 1, 0]]
    with pytest.raises(client.PredictionError, match="2 predictions for 3 rows"):
        client.parse_predictions("v1", {"predictions": [0, 1]}, expected=3)
