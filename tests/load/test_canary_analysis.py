"""Canary analysis: the decision rule on measured numbers, then the command against real local
KServe servers side by side: v1 as stable, v2 as canary, made slow or failing on purpose."""

from __future__ import annotations

from kserve_gitops.load import canary_analysis
from kserve_gitops.load.canary_analysis import Arm, Rules

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kserve_gitops.repo import slo
from kserve_gitops.serving import process
from tests import REPO

RULES = Rules(
    rate=20,
    duration=3,
    latency_p99_ratio_max=1.5,
    latency_p99_slack_ms=10,
    error_ratio_margin=0.01,
    min_requests=50,
    source="test",
)
TARGETS = slo.Targets(
    latency_avg_ms=120, latency_max_ms=250, throughput_min_rps=18, error_ratio_max=0.01
)


def arm(name: str, p99: float = 8.0, errors: float = 0.0, completed: int = 60, **kw) -> Arm:
    fields = dict(
        name=name,
        target="http://x",
        completed=completed,
        error_ratio=errors,
        latency_avg_ms=p99 / 2,
        latency_p50_ms=p99 / 3,
        latency_p95_ms=p99 * 0.8,
        latency_p99_ms=p99,
        latency_max_ms=p99 * 1.2,
        throughput_rps=20.0,
        report_dir="r",
    )
    return Arm(**(fields | kw))


@pytest.mark.parametrize(
    ("stable", "canary", "decision", "reason"),
    [
        (arm("stable"), arm("canary", p99=12.0), "promote", "within the SLO targets"),
        (arm("stable"), arm("canary", p99=27.0), "rollback", "canary p99 27.00 ms > 22.00 ms"),
        (arm("stable"), arm("canary", errors=0.02), "rollback", "error ratio 0.0200 > 0.0100"),
        (
            arm("stable", errors=0.05),
            arm("canary", errors=0.055),
            "hold",
            "stable misses the SLO error ratio <= 0.01 (0.0500)",
        ),
        (
            arm("stable"),
            arm("canary", p99=15, latency_max_ms=300),
            "rollback",
            "canary misses the SLO latency max <= 250 ms (300.00 ms)",
        ),
        (arm("stable", completed=20), arm("canary"), "hold", "stable completed 20 < 50 requests"),
    ],
)
def test_decision_rule(stable: Arm, canary: Arm, decision: str, reason: str) -> None:
    got, reasons, checks = canary_analysis.decide(stable, canary, TARGETS, RULES)
    assert got == decision
    assert any(reason in r for r in reasons), reasons
    assert set(checks) == {"stable", "canary"}


def test_committed_config_is_valid() -> None:
    rules = canary_analysis.load_rules(REPO)
    assert rules.latency_p99_ratio_max >= 1 and 0 <= rules.error_ratio_margin < 1
    assert rules.source == "config/canary.yaml"


def test_bad_config_is_named(tmp_path: Path, kgops) -> None:
    bad = tmp_path / "canary.yaml"
    bad.write_text((REPO.config / "canary.yaml").read_text().replace("min_requests: 100", ""))
    proc = kgops(
        "canary-analysis", "--stable", "http://a", "--canary", "http://b", "--config", str(bad)
    )
    assert proc.returncode == 2
    assert "min_requests: Required field missing" in proc.stderr
    proc = kgops("canary-analysis", "--stable", "a:1", "--canary", "http://b")
    assert proc.returncode == 2 and "--stable 'a:1': expected an http(s):// URL" in proc.stderr


# Integration: generous absolute targets (a 2-core runner shares its cores between four servers
# and two load generators), so the relative rule is what must catch the slow canary.
TEST_SLO = """
defaults:
  load: {rate: 20, duration: 3s, protocol: v1}
  targets: {latency_avg_ms: 1000, latency_max_ms: 5000, throughput_min_rps: 1,
            error_ratio_max: 0.05}
"""
TEST_RULES = """
load: {rate: 20, duration: 3s}
relative: {latency_p99_ratio_max: 2, latency_p99_slack_ms: 50, error_ratio_margin: 0.02}
min_requests: 40
"""
V2 = REPO.models / "sklearn-iris" / "v2"
CANARIES = {
    "good": [],
    "slow": ["--fault-delay-ms", "400"],
    "failing": ["--fault-rate", "0.3", "--fault-status", "503"],
}


def _warm(srv: process.LocalServer) -> process.LocalServer:
    for _ in range(5):  # first predictions pay imports and allocation: not the canary's fault
        httpx.post(
            f"{srv.url}/v1/models/sklearn-iris:predict",
            json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
            timeout=10,
            trust_env=False,
        )
    return srv


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, process.LocalServer]]:
    started: dict[str, process.LocalServer] = {}
    try:
        started["stable"] = process.start_background(REPO, extra_args=["--access-log", "false"])
        for name, faults in CANARIES.items():
            started[name] = process.start_background(
                REPO, model_dir=V2, extra_args=["--access-log", "false", *faults]
            )
        yield {name: _warm(srv) for name, srv in started.items()}
    finally:
        for srv in started.values():
            srv.stop()


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("canary-config")
    (base / "slo.yaml").write_text(TEST_SLO)
    (base / "canary.yaml").write_text(TEST_RULES)
    return base / "slo.yaml", base / "canary.yaml"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("canary", "decision", "exit_code"),
    [("good", "promote", 0), ("slow", "rollback", 4), ("failing", "rollback", 4)],
)
def test_analysis_decides(
    servers, configs, tmp_path: Path, kgops, canary: str, decision: str, exit_code: int
) -> None:
    slo_config, rules = configs
    proc = kgops(
        "canary-analysis",
        "--stable",
        servers["stable"].url,
        "--canary",
        servers[canary].url,
        "--rate",
        "20",
        "--duration",
        "3s",
        "--env",
        "staging",
        "--progress",
        "1",
        "--config",
        str(rules),
        "--slo-config",
        str(slo_config),
        "--reports",
        str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == exit_code, proc.stdout[-3000:] + proc.stderr[-2000:]
    [report] = [p for p in tmp_path.iterdir() if p.name.endswith("-canary")]
    summary = json.loads((report / "summary.json").read_text())
    stable, measured = summary["arms"]["stable"], summary["arms"]["canary"]
    print(f"{canary}: {summary['decision']} stable {stable} canary {measured}")  # -s: figures
    assert summary["decision"] == decision and summary["exit_code"] == exit_code
    assert (report / "comparison.png").stat().st_size > 10_000
    for name in ("stable", "canary"):
        [run] = list((report / name).iterdir())
        assert (run / "summary.json").is_file() and (run / "plot.png").is_file()
        assert summary["arms"][name]["completed"] == 60  # 20 req/s x 3 s, same load each side
    assert stable["error_ratio"] == 0
    assert f"{decision.upper()} (exit {exit_code})" in proc.stdout
    assert "[stable] load: v1" in proc.stdout and "[canary] load: v1" in proc.stdout
    if canary == "slow":
        assert measured["latency_p50_ms"] >= 400
        assert any(r.startswith("canary p99") for r in summary["reasons"])
    if canary == "failing":
        assert 0.1 < measured["error_ratio"] < 0.6
        assert any(r.startswith("canary error ratio") for r in summary["reasons"])
