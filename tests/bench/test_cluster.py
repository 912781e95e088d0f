"""`kgops bench-cluster`'s pieces that need no cluster: a load test's summary as the figures the
tables compare, a measurement as a search point, and why the cluster part cannot run here;
`kgops bench --cluster` saying so in its output and in BENCHMARKS.md."""

from __future__ import annotations

import subprocess

import pytest

from kserve_gitops.base import ratesearch
from kserve_gitops.bench import cluster
from tests import REPO

SUMMARY = {
    "verdict": "PASS",
    "latency_ms": {"avg": 2.0, "p50": 1.5, "p95": 4.0, "p99": 9.0, "max": 30.0},
    "throughput_rps": 49.5,
    "requests": {"completed": 990, "failures": 4, "unfinished": 6},
    "generator": {
        "cpu_percent_of_one_core": 30.0,
        "processes": [
            {"source": "master", "cpu_percent_of_one_core": 5.0},
            {"source": "w1", "cpu_percent_of_one_core": 30.0},
            {"source": "w2", "cpu_percent_of_one_core": 25.0},
        ],
    },
}


def test_summary_figures_count_unfinished_as_errors_and_every_generator_process() -> None:
    m = cluster.measurement(SUMMARY).metrics
    assert (m["avg_ms"], m["p95_ms"], m["p99_ms"], m["rps"]) == (2.0, 4.0, 9.0, 49.5)
    assert m["errors"] == 10  # 4 failed + 6 never answered
    # Completed includes the 4 failed: 986 answered right of the 996 sent or due.
    assert m["success_pct"] == pytest.approx(100 * 986 / 996)
    assert m["generator_cpu_pct"] == 60.0  # master and both workers, not the busiest alone


def test_a_measurement_is_judged_by_the_shared_pass_rule() -> None:
    point = cluster.search_point(50.0, cluster.measurement(SUMMARY))
    assert point["latency_ms"]["p99"] == 9.0 and point["achieved_rps"] == 49.5
    assert not ratesearch.passes(point, 50.0)  # 10 errors
    clean = {**SUMMARY, "requests": {"completed": 1000, "failures": 0, "unfinished": 0}}
    assert ratesearch.passes(cluster.search_point(50.0, cluster.measurement(clean)), 50.0)


def test_not_root_then_missing_node_tools_say_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    assert cluster.not_run_reason() == "not root (the real node's kubelet and containerd need root)"
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster.shutil, "which", lambda t: None if t == "ipset" else f"/x/{t}")
    assert cluster.not_run_reason() == "node tools missing: ipset (make node-tools)"
    monkeypatch.setattr(cluster.shutil, "which", lambda t: f"/x/{t}")
    assert cluster.not_run_reason() is None


def test_bench_cluster_not_run_is_said(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cluster, "not_run_reason", lambda: "not root")
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: ran.append(argv))
    assert cluster.run_cluster(REPO, "dev") == "not root"
    assert ran == [] and "cluster part not run: not root" in capsys.readouterr().out


def test_a_failed_bench_cluster_is_said(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cluster, "not_run_reason", lambda: None)
    ran: list[list[str]] = []

    def run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(subprocess, "run", run)
    reason = cluster.run_cluster(REPO, "prod")
    assert reason == "`kgops bench-cluster --env prod` failed (exit 3)"
    assert ran[0][1:] == ["-m", "kserve_gitops.bench.cluster", "--env", "prod"]
    assert f"cluster part not run: {reason}" in capsys.readouterr().out
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 0))
    assert cluster.run_cluster(REPO, "dev") is None


def test_the_setup_is_checked_before_any_cluster_starts() -> None:
    args = cluster.parser(REPO).parse_args([])
    checked = cluster.setup(REPO, args)
    assert checked.rates == [5.0, 50.0, 500.0] and checked.searched == ["service", "activator"]
    assert (checked.ramp.start, checked.ramp.end, checked.ramp.seconds) == (10.0, 400.0, 120.0)
    assert checked.declared.env == "dev" and checked.declared.max_replicas == 1
    for bad, message in (
        (["--max-rate-paths", "service,local"], "--max-rate-paths local: not a cluster path"),
        (["--scaleout-rates", "400,10"], "expected 0 < from <= to"),
        (["--scaleout-rates", "10"], "expected 0 < from <= to"),
        (["--rates", "5,fast"], "could not convert"),
    ):
        with pytest.raises(ValueError, match=message):
            cluster.setup(REPO, cluster.parser(REPO).parse_args(bad))
