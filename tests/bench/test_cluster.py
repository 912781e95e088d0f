"""`kgops bench-cluster`'s pieces that need no cluster: a load test's summary as the figures the
tables compare, a measurement as a search point, and why the cluster part cannot run here;
`kgops bench --cluster` saying so in its output and in BENCHMARKS.md; the parts chosen or
refused by what the environment declares, before any cluster starts; staging's plan; a
scale-out-only record redrawn."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kserve_gitops.base import ratesearch
from kserve_gitops.bench import cluster, cluster_report
from tests import REPO
from tests.bench.cluster_record import scaleout_record

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
    assert cluster.run_cluster(REPO, "dev", "staging") == "not root"
    assert ran == [] and "cluster part not run: not root" in capsys.readouterr().out


def test_bench_cluster_runs_the_environments_parts_then_the_scaleout_elsewhere() -> None:
    assert cluster.runs("dev", "staging") == [
        ["--env", "dev", "--without", "scaleout"],
        ["--env", "staging", "--parts", "scaleout", "--out", "benchmarks/cluster-scaleout.md"],
    ]
    assert cluster.runs("prod", "") == [["--env", "prod"]]


def test_a_failed_bench_cluster_is_said(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cluster, "not_run_reason", lambda: None)
    ran: list[list[str]] = []

    def run(argv: list[str], **_kw: object) -> subprocess.CompletedProcess:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3 if "prod" in argv else 0)

    monkeypatch.setattr(subprocess, "run", run)
    reason = cluster.run_cluster(REPO, "prod", "staging")
    assert reason == "`kgops bench-cluster --env prod --without scaleout` failed (exit 3)"
    assert ran[0][1:] == [
        "-m",
        "kserve_gitops.bench.cluster",
        "--env",
        "prod",
        "--without",
        "scaleout",
    ]
    assert ran[1][-5:] == [
        "staging",
        "--parts",
        "scaleout",
        "--out",
        "benchmarks/cluster-scaleout.md",
    ]
    assert f"cluster part not run: {reason}" in capsys.readouterr().out
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 0))
    assert cluster.run_cluster(REPO, "dev", "staging") is None


def _setup(*argv: str) -> cluster.Setup:
    return cluster.setup(REPO, cluster.parser(REPO).parse_args(list(argv)))


def test_the_setup_is_checked_before_any_cluster_starts() -> None:
    checked = _setup()
    assert checked.rates == [5.0, 50.0, 500.0] and checked.searched == ["service", "activator"]
    assert (checked.ramp.rate, checked.ramp.end_rate, checked.ramp.ramp_s) == (10.0, 400.0, 120.0)
    assert checked.declared.env == "dev" and checked.declared.max_replicas == 1
    for bad, message in (
        (["--max-rate-paths", "service,local"], "--max-rate-paths local: not a cluster path"),
        (["--scaleout-rates", "400,10"], "expected 0 < from <= to"),
        (["--scaleout-rates", "10"], "expected 0 < from <= to"),
        (["--rates", "5,fast"], "could not convert"),
        (["--rates", ""], "--rates: none given for part rates"),
        (["--parts", "max", "--max-rate-paths", ""], "--max-rate-paths: none given for part max"),
        (["--parts", "cold", "--cold-starts", "0"], "--cold-starts: expected 1 or more"),
        (["--parts", "slo,fast"], r"--parts/--without fast: not a part \(slo,rates,max,cold"),
        (["--parts", "slo", "--without", "cold"], "--parts and --without exclude each other"),
        (["--without", "slo,rates,max,cold"], "no part left that dev allows"),
    ):
        with pytest.raises(ValueError, match=message):
            _setup(*bad)


def test_by_default_every_part_the_environment_allows(capsys) -> None:
    assert _setup().parts == ["slo", "rates", "max", "cold"]  # dev: maxReplicas 1
    assert "part scaleout left out: environments/dev/models/sklearn-iris.yaml maxReplicas 1" in (
        capsys.readouterr().err
    )
    assert _setup("--env", "staging").parts == ["slo", "rates", "max", "scaleout"]
    assert _setup("--env", "staging", "--without", "scaleout").parts == ["slo", "rates", "max"]
    assert _setup("--parts", "cold,slo").parts == ["slo", "cold"]  # in the order they run
    assert _setup("--env", "staging", "--parts", "scaleout").parts == ["scaleout"]


def test_a_part_the_environment_cannot_do_is_refused_with_its_file_and_field() -> None:
    with pytest.raises(
        ValueError,
        match=r"--parts cold: environments/staging/models/sklearn-iris.yaml minReplicas 1: the"
        " revision never scales to zero",
    ):
        _setup("--env", "staging", "--parts", "slo,cold")
    with pytest.raises(
        ValueError,
        match=r"--parts scaleout: environments/dev/models/sklearn-iris.yaml maxReplicas 1: the ramp"
        r" starts with 1 pod\(s\)",
    ):
        _setup("--parts", "scaleout")


def test_a_refused_part_exits_2_before_any_cluster_starts(monkeypatch, capsys) -> None:
    def no_e2e(*_a: object, **_kw: object) -> None:
        raise AssertionError("the e2e started")

    monkeypatch.setattr(cluster.e2e_run, "run", no_e2e)
    monkeypatch.setattr(cluster, "node_plan", no_e2e)
    assert cluster.main(["--env", "staging", "--parts", "cold"], REPO) == 2
    err = capsys.readouterr().err
    assert "error: --parts cold: environments/staging/models/sklearn-iris.yaml minReplicas 1" in err


def test_only_the_paths_the_parts_load_are_opened() -> None:
    assert cluster.opened(_setup("--parts", "cold")) == []
    assert cluster.opened(_setup("--parts", "slo")) == ["service", "port-forward", "activator"]
    assert cluster.opened(_setup("--parts", "max")) == ["service", "activator"]
    # port-forward's keep-alive goes through the Service: opened first.
    searched = _setup("--parts", "max", "--max-rate-paths", "port-forward")
    assert cluster.opened(searched) == ["service", "port-forward"]


def test_staging_s_real_node_plan_is_built_as_dev_s() -> None:
    dev, staging = cluster.node_plan(REPO, "dev"), cluster.node_plan(REPO, "staging")
    assert (staging.env, staging.provider, staging.cluster) == ("staging", "node", "kgops-staging")
    assert staging.layers() == dev.layers() and "verify" not in staging.layers()
    assert (staging.namespace, staging.models) == (dev.namespace, dev.models)


def test_from_record_redraws_a_scaleout_only_record(tmp_path: Path) -> None:
    out = tmp_path / "cluster-scaleout.md"
    out.with_suffix(".json").write_text(json.dumps(scaleout_record()))
    assert cluster.main(["--from-record", "--out", str(out)], REPO) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cluster-scaleout.json",
        "cluster-scaleout.md",
        "cluster-scaleout.png",
    ]
    assert out.read_text() == cluster_report.markdown(scaleout_record())
    assert cluster.main(["--from-record", "--out", str(tmp_path / "none.md")], REPO) == 2
