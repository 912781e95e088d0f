"""The two runtimes side by side: KServe's sklearn server and MLServer (RUNTIME=mlserver), from
the same artifact, with the answers that differ between them pinned down; their pins; and the
chart schema that refuses what a runtime cannot serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml

from kserve_gitops.bench import pinning
from kserve_gitops.serving import client, mlserver, process, runtimes
from tests import REPO, markdown_rows

MODEL = "sklearn-iris"
V2 = f"/v2/models/{MODEL}/infer"
PINS = REPO.versions["kserve"]
CHART_DIR = REPO.charts / "inference-service"
MINIMAL = {"model": {"storageUri": "pvc://sklearn-iris-models/v1"}}


def constraint(name: str) -> str | None:
    for line in (REPO.root / "constraints-mlserver.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1]
    return None


def test_mlserver_venv_pins_follow_versions_yaml() -> None:
    version = str(PINS["mlServer"]["version"])
    assert constraint("mlserver") == version
    assert constraint("mlserver-sklearn") == version
    # The artifact is pickled by this scikit-learn; MLServer must unpickle it with the same one.
    assert constraint("scikit-learn") == str(PINS["sklearnServer"]["scikitLearn"])


def test_mlserver_pin_is_the_image_kserve_runtime_configs_runs(shared_charts: Path) -> None:
    values = shared_charts / "kserve-runtime-configs" / PINS["version"] / "values.yaml"
    image = yaml.safe_load(values.read_text())["kserve"]["servingruntime"]["mlserver"]
    assert image["image"].endswith("seldonio/mlserver")
    assert str(image["tag"]) == str(PINS["mlServer"]["version"])


@pytest.mark.parametrize(
    ("runtime", "protocol", "message"),
    [
        ("mlserver", "v1", "runtime mlserver serves protocol v2 only, not v1"),
        ("tritonserver", None, "runtime 'tritonserver': expected one of sklearnserver, mlserver"),
    ],
)
def test_runtime_check_names_the_problem(runtime: str, protocol: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        runtimes.check(runtime, protocol)
    for name, protocols in runtimes.PROTOCOLS.items():
        for ok in protocols:
            runtimes.check(name, ok)


def test_make_refuses_an_unknown_runtime() -> None:
    done = subprocess.run(
        ["make", "-n", "serve", "RUNTIME=triton"], cwd=REPO.root, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "RUNTIME=triton: expected sklearnserver or mlserver" in done.stderr


# ---- chart: the schema refuses combinations the runtime cannot serve -------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def _values(**model: Any) -> dict[str, Any]:
    values = json.loads(json.dumps(MINIMAL))
    for key, value in model.items():
        if key == "format":
            values["model"]["modelFormat"] = {"name": value}
        else:
            values["model"][key] = value
    return values


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"runtime": "kserve-mlserver"}, "at '/model/protocolVersion': value must be 'v2'"),
        (
            {"runtime": "kserve-mlserver", "protocolVersion": "v1"},
            "at '/model/protocolVersion': value must be 'v2'",
        ),
        (
            {"runtime": "kserve-mlserver", "protocolVersion": "v2", "format": "tensorflow"},
            "at '/model/modelFormat/name': value must be one of 'sklearn', 'xgboost'",
        ),
        (
            {"runtime": "kserve-sklearnserver", "format": "xgboost"},
            "at '/model/modelFormat/name': value must be 'sklearn'",
        ),
    ],
)
def test_schema_refuses_what_the_runtime_cannot_serve(
    chart: helm.Chart, model: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(_values(**model))
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "model",
    [
        {"runtime": "kserve-mlserver", "protocolVersion": "v2"},
        {"runtime": "kserve-mlserver", "protocolVersion": "v2", "format": "xgboost"},
        {"runtime": "kserve-sklearnserver", "protocolVersion": "v1"},
        {"runtime": "kserve-sklearnserver", "protocolVersion": "v2"},
        {"runtime": "", "protocolVersion": "v1"},
    ],
)
def test_schema_accepts_what_the_runtime_serves(chart: helm.Chart, model: dict[str, Any]) -> None:
    chart.validate_schema(_values(**model))


def test_a_chart_scenario_selects_mlserver_over_v2() -> None:
    scenario = yaml.safe_load((CHART_DIR / "ci" / "v2-runtime-values.yaml").read_text())
    assert scenario["model"]["runtime"] == "kserve-mlserver"
    assert scenario["model"]["protocolVersion"] == "v2"


# ---- MLServer locally, from the same artifact ------------------------------------------------


def _port_block() -> int:
    """Three consecutive free ports (HTTP, gRPC, metrics) in this pytest-xdist worker's own
    slice of 38300-38899, so parallel workers never pick the same block."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    start = 38300 + (worker * 120) % 600
    return process.port_block(start, start + 119)


def _need_mlserver() -> None:
    try:
        mlserver.mlserver_command(REPO)
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def ml() -> Iterator[process.LocalServer]:
    """MLServer with the image's defaults (one inference worker process, debug on)."""
    _need_mlserver()
    with process.running(REPO, "mlserver", port=_port_block(), timeout=120) as local:
        yield local


def _metrics_url(local: process.LocalServer) -> str:
    port = int(local.url.rsplit(":", 1)[1])
    return f"http://127.0.0.1:{port + 2}/metrics"


def v2(shape: list[int], data: list, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.slow
def test_mlserver_predicts_the_reference_rows_over_v2(ml: process.LocalServer) -> None:
    body = httpx.post(ml.url + V2, json=v2([2, 4], [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6]))
    assert body.status_code == 200
    output = body.json()["outputs"][0]
    # Differences from KServe's server: output named "predict", shape [N, 1] (KServe: [N]).
    assert (output["name"], output["shape"], output["datatype"]) == ("predict", [2, 1], "INT64")
    assert output["data"] == [1, 1]
    # The load test and the batch client read it like KServe's answer.
    expected = json.loads((REPO.root / "loadtests" / "payloads" / "expected.json").read_text())
    payload = json.loads((REPO.root / "loadtests" / "payloads" / "v2-iris-two.json").read_text())
    answer = httpx.post(ml.url + V2, json=payload).json()
    assert client.parse_predictions("v2", answer, 2) == expected["iris-two"]


@pytest.mark.slow
def test_v2_answers_side_by_side(model_server: str, ml: process.LocalServer) -> None:
    body = v2([2, 4], [6.8, 2.8, 4.8, 1.4, 6.0, 3.4, 4.5, 1.6])
    kserve = httpx.post(model_server + V2, json=body).json()["outputs"][0]
    theirs = httpx.post(ml.url + V2, json=body).json()["outputs"][0]
    assert (kserve["name"], kserve["shape"]) == ("output-0", [2])
    assert (theirs["name"], theirs["shape"]) == ("predict", [2, 1])
    assert kserve["data"] == theirs["data"] == [1, 1]
    ready = httpx.get(f"{model_server}/v2/models/{MODEL}/ready")
    assert ready.json() == {"name": MODEL, "ready": True}
    assert httpx.get(ml.url + f"/v2/models/{MODEL}/ready").content == b""


@pytest.mark.slow
def test_mlserver_health_and_metadata(ml: process.LocalServer) -> None:
    for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{MODEL}/ready"):
        response = httpx.get(ml.url + path)
        # MLServer answers 200 with an empty body where KServe answers {"ready": true}.
        assert response.status_code == 200 and response.content == b"", path
    assert httpx.get(ml.url + "/v2").json() == {
        "name": "mlserver",
        "version": str(PINS["mlServer"]["version"]),
        "extensions": [],
    }
    meta = httpx.get(f"{ml.url}/v2/models/{MODEL}").json()
    # No model-settings.json in the artifact directory: MLServer declares no tensors.
    assert meta["name"] == MODEL and meta["inputs"] == [] and meta["outputs"] == []


@pytest.mark.slow
def test_mlserver_has_no_v1_and_metrics_on_their_own_port(ml: process.LocalServer) -> None:
    v1 = httpx.post(f"{ml.url}/v1/models/{MODEL}:predict", json={"instances": [[1, 2, 3, 4]]})
    assert (v1.status_code, v1.json()) == (404, {"detail": "Not Found"})
    assert httpx.get(f"{ml.url}/v1/models/{MODEL}").status_code == 404
    assert httpx.get(ml.url + "/metrics").status_code == 404
    httpx.post(ml.url + V2, json=v2([1, 4], [5.1, 3.5, 1.4, 0.2]))
    text = httpx.get(_metrics_url(ml)).text
    success = [
        line for line in text.splitlines() if line.startswith("model_infer_request_success_total")
    ]
    assert success and f'model="{MODEL}"' in success[0] and float(success[0].split()[-1]) >= 1
    assert 'rest_server_requests_total{app_name="mlserver"' in text


# The same bad requests to both runtimes: (name, body, KServe's status and words, MLServer's).
BAD_V2 = [
    ("malformed JSON", b'{"inputs": [', (422, "JSON decode error"), (422, "JSON decode error")),
    ("missing inputs", b'{"id": "1"}', (422, "inputs"), (422, "field required")),
    ("V1 body on V2", b'{"instances": [[1, 2, 3, 4]]}', (422, "inputs"), (422, "inputs")),
    (
        "no tensor",
        json.dumps({"inputs": []}).encode(),
        (400, "exactly one tensor"),
        (400, "only supports a single input tensor (0 were received)"),
    ),
    (
        "wrong feature count",
        json.dumps(v2([1, 3], [6.8, 2.8, 4.8])).encode(),
        (400, "shape must be [N, 4], got [1, 3]"),
        (500, "X has 3 features, but GaussianNB is expecting 4 features"),
    ),
    (
        "non-numeric data",
        json.dumps(v2([1, 4], [1, 2, "x", 4], "FP64")).encode(),
        (400, "could not convert"),
        (500, "could not convert string to float: 'x'"),
    ),
    (
        "BYTES tensor",
        json.dumps(v2([1, 4], ["a", "b", "c", "d"], "BYTES")).encode(),
        (400, "datatype must be numeric"),
        (500, "not compatible with arrays of bytes/strings"),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "sklearnserver", "mlserver_answer"),
    [pytest.param(b, k, m, id=name) for name, b, k, m in BAD_V2],
)
def test_bad_input_side_by_side(
    model_server: str,
    ml: process.LocalServer,
    body: bytes,
    sklearnserver: tuple[int, str],
    mlserver_answer: tuple[int, str],
) -> None:
    headers = {"content-type": "application/json"}
    for url, (status, words) in ((model_server, sklearnserver), (ml.url, mlserver_answer)):
        response = httpx.post(url + V2, content=body, headers=headers)
        assert response.status_code == status, (url, response.text)
        assert words in response.text, (url, response.text)
        # KServe and MLServer's own errors: {"error": ...}; FastAPI's validation: {"detail": ...}.
        assert set(response.json()) & {"error", "detail"}


@pytest.mark.slow
def test_mlserver_in_process_inference_and_clean_stop() -> None:
    """--workers 0 (inference in the HTTP process) serves too; SIGTERM stops MLServer and
    removes its scratch directory."""
    _need_mlserver()
    local = process.start_background(
        REPO,
        "mlserver",
        port=_port_block(),
        workers=0,
        extra_args=["--debug", "false"],
        timeout=120,
    )
    try:
        children = server_children(local)
        answer = httpx.post(local.url + V2, json=v2([1, 4], [5.1, 3.5, 1.4, 0.2])).json()
        assert answer["outputs"][0]["data"] == [0]
        # The launcher's ready line comes from a thread polling every 100 ms: give it time.
        deadline = time.monotonic() + 10
        while "ready (MLServer)" not in local.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ready (MLServer)" in local.log_text()
        assert "/v2/models/{model_name}/infer" not in local.log_text()  # no access log
    finally:
        code = local.stop()
    assert code == 0, local.log_text()[-2000:]
    scratch = [a for a in children if "kgops-mlserver-" in a]
    assert scratch and not any(Path(a).exists() for a in scratch)


def server_children(local: process.LocalServer) -> list[str]:
    """The working directories of the launcher's children (MLServer's scratch directory)."""
    import psutil

    return [p.cwd() for p in psutil.Process(local.process.pid).children(recursive=True)]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--model-dir", "/nonexistent"], {}, "/nonexistent is not a directory"),
        (["--http-port", "-1"], {}, "--http-port: expected 0 or more"),
        ([], {mlserver.VENV_ENV: "/nonexistent-venv"}, "run `make mlserver-venv`"),
    ],
)
def test_launcher_refuses_bad_setup(args: list[str], env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kserve_gitops.serving.mlserver", "--http-port", "38299", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.slow
def test_bench_runtimes_side_by_side_in_rotating_rounds(kgops, tmp_path: Path) -> None:
    """`make bench` part: two configurations, two rounds, tiny steps; the other results of the
    results file are kept (--runtimes-only). The generator and the servers are pinned to
    disjoint CPUs (bench.pinning's plan over this process's CPUs), read back from the kernel."""
    _need_mlserver()
    earlier = subprocess.run(
        ["git", "show", "HEAD:benchmarks/results.json"],
        cwd=REPO.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results, out = tmp_path / "r.json", tmp_path / "BENCH.md"
    results.write_text(earlier)
    done = kgops(
        "bench",
        "--runtimes-only",
        "--runtime-rounds",
        "2",
        "--runtime-configs",
        "sklearnserver-tuned",
        "mlserver-inprocess",
        "--fixed-duration",
        "1",
        "--step-duration",
        "1",
        "--max-rate",
        "100",
        "--runtime-profile-rate",
        "400",
        "--wait-for-quiet",
        "0",
        "--results",
        str(results),
        "--out",
        str(out),
        "--plot",
        str(tmp_path / "b.png"),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["configs"] == json.loads(earlier)["configs"]  # kept, not re-measured
    side = data["runtimes"]
    assert side["order"] == [
        ["sklearnserver-tuned", "mlserver-inprocess"],
        ["mlserver-inprocess", "sklearnserver-tuned"],
    ]
    seen = sorted((p["round"], p["config"], p["protocol"]) for p in side["points"])
    assert seen == sorted(
        (r, c, proto)
        for r in (1, 2)
        for c, protos in (("sklearnserver-tuned", ("v1", "v2")), ("mlserver-inprocess", ("v2",)))
        for proto in protos
    )
    for point in side["points"]:
        assert point["cold_start_s"] > 0 and all(rss > 50 for rss in point["rss_mib"])
        assert point["fixed"]["requests"] == 80 and point["fixed"]["errors"] == 0
        assert point["fixed"]["server_cpu_ms_per_request"] > 0
        assert point["steps"][0]["rate"] == 50
    assert side["versions"]["mlserver"] == str(PINS["mlServer"]["version"])
    # Pinned as planned, and every thread of every server process was where it was put.
    pin = pinning.plan(os.sched_getaffinity(0))
    if pin is None:
        assert side["pinning"] is None and "available to this process" in side["pinning_note"]
    else:
        assert side["pinning"] == pin.to_json()
        assert {"generator": pin.generator, "server": pin.server} == {
            who: tuple(pinning.parse_cpus(cpus)) for who, cpus in side["pinning_observed"].items()
        }
        assert all(p["cpus"]["server"] == list(pin.server) for p in side["points"])
        assert all(p["cpus"]["generator"] == list(pin.generator) for p in side["points"])
    # One record per configuration per round, each with the load average when it started.
    records = side["rounds_run"]["records"]
    assert [(r["round"], r["config"]) for r in records] == [
        (n + 1, c) for n, order in enumerate(side["order"]) for c in order
    ]
    assert all(len(r["load_average"]) == 3 and r["metrics"]["v2.avg_ms"] > 0 for r in records)
    assert side["quiet"]["timeout_s"] == 0 and len(side["quiet"]["load_average"]) == 3
    text = out.read_text()
    if isinstance(side["profiles"], str):  # py-spy may not attach here (ptrace)
        assert f"Not sampled: {side['profiles']}" in text
    else:
        assert [p["config"] for p in side["profiles"]] == [
            "sklearnserver-tuned",
            "mlserver-inprocess",
        ]
        # 1 s of samples of GIL-holding threads: a quiet machine may give one runtime none.
        assert any(found["samples"] > 0 for found in side["profiles"])
        for found in side["profiles"]:
            if found["samples"]:
                assert abs(sum(found["shares"].values()) - 1) < 1e-9
        assert "### Where the Python time goes (py-spy)" in text
    goal = re.search(r"^- Goal, sklearnserver-tuned at least as fast as the best .*$", text, re.M)
    assert goal, text[-3000:]
    assert (
        goal[0].endswith((": met in every round.", "on at least one figure."))
        or ": NOT met (" in goal[0]
    )
    assert "### V1 (mlserver-inprocess: no V1 endpoint)" in text
    configs = {row[0] for row in markdown_rows(text)}
    assert {"sklearnserver-tuned", "mlserver-inprocess"} <= configs
    assert re.search(r"^- Throughput, V2: (\*\*|no verdict: rounds disagree)", text, re.M)
    assert "- Memory: **" in text
    assert "CPU pinning: " in text and "interleaved rounds" in text


def test_bench_refuses_an_unknown_runtime_config(kgops) -> None:
    done = kgops("bench", "--runtimes-only", "--runtime-configs", "triton", timeout=60)
    assert done.returncode == 2
    assert "--runtime-configs: unknown triton; expected some of sklearnserver-upstream" in (
        done.stderr
    )


def test_demo_and_make_refuse_v1_on_mlserver(kgops) -> None:
    done = kgops("demo", "--runtime", "mlserver", "--protocol", "v1", timeout=60)
    assert done.returncode == 2
    assert "runtime mlserver serves protocol v2 only, not v1" in done.stderr
    made = subprocess.run(
        ["make", "-n", "loadtest", "RUNTIME=mlserver", "PROTOCOL=v1"],
        cwd=REPO.root,
        capture_output=True,
        text=True,
    )
    assert made.returncode != 0 and "MLServer has no V1 :predict endpoint" in made.stderr
    # Without PROTOCOL, RUNTIME=mlserver means V2 for the load test and the canary analysis.
    for target in ("loadtest", "canary-analysis"):
        made = subprocess.run(
            ["make", "-n", target, "RUNTIME=mlserver", "STABLE=http://a", "CANARY=http://b"],
            cwd=REPO.root,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "--protocol v2" in made.stdout, target


def test_use_uvloop_runs_kserve_single_worker_loop_on_uvloop() -> None:
    """What ModelServer.start() does with one worker (get_event_loop, then asyncio.run) runs on
    asyncio's own loop unless server.use_uvloop() was called first."""
    probe = (
        "import asyncio, sys; from kserve_gitops.serving import server\n"
        "if sys.argv[1] == 'uvloop': server.use_uvloop()\n"
        "asyncio.get_event_loop()\n"
        "async def kind(): return type(asyncio.get_running_loop()).__module__\n"
        "print(asyncio.run(kind()))\n"
    )
    kinds = {
        choice: subprocess.run(
            [sys.executable, "-c", probe, choice], capture_output=True, text=True, check=True
        ).stdout.strip()
        for choice in ("uvloop", "auto")
    }
    assert kinds == {"uvloop": "uvloop", "auto": "asyncio.unix_events"}


@pytest.mark.slow
def test_profile_samples_a_runtime_under_load(kgops, tmp_path: Path) -> None:
    _need_mlserver()
    out = tmp_path / "p.md"
    done = kgops(
        "profile",
        "--config",
        "mlserver-inprocess",
        "--rate",
        "60",
        "--duration",
        "3",
        "--out",
        str(out),
        timeout=300,
    )
    if done.returncode != 0 and "Permission denied" in done.stderr + done.stdout:
        pytest.skip(f"py-spy may not attach here (ptrace): {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = out.read_text()
    assert "mlserver-inprocess (--workers 0 --debug false), v2 at 60 req/s for 3 s" in text
    shares = {where: share.rstrip("%") for where, share in markdown_rows(text)[1:]}
    assert shares and abs(sum(map(float, shares.values())) - 100) < 0.5
    # Which library holds the GIL in a 3 s sample depends on how busy the machine is (CI saw no
    # innermost MLServer frame once); that py-spy sampled MLServer's server process (the child
    # of our launcher) does not: each collapsed line is one stack, its processes first.
    stacks = out.with_suffix(".collapsed").read_text().splitlines()
    assert stacks and all("bin/mlserver start " in stack for stack in stacks), stacks[:3]
