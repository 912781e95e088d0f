"""SLO config (yamale schema, per-environment overrides) and the verdict of measured numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve_gitops.repo import slo
from tests import REPO

VALID = """\
defaults:
  load: {rate: 80, duration: 30s, protocol: v1}
  targets:
    latency_avg_ms: 120
    latency_max_ms: 250
    throughput_min_rps: 80
    error_ratio_max: 0
environments:
  staging:
    load: {rate: 200, users: 64}
    targets: {latency_avg_ms: 50, latency_p99_ms: 90}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slo.yaml"
    path.write_text(text)
    return path


def test_repository_config_is_valid_and_defaults_match_the_issue():
    base = slo.load_slo(REPO)
    assert base.load == slo.LoadSettings(rate=80.0, duration=30.0, protocol="v1")
    assert base.targets == slo.Targets(
        latency_avg_ms=120, latency_max_ms=250, throughput_min_rps=80, error_ratio_max=0
    )
    for env in ("dev", "staging", "prod"):
        assert slo.load_slo(REPO, env).targets.latency_avg_ms == 120


def test_environment_override_replaces_only_its_keys(tmp_path: Path):
    config = write(tmp_path, VALID)
    staging = slo.load_slo(REPO, "staging", config=config)
    assert staging.load == slo.LoadSettings(rate=200.0, duration=30.0, protocol="v1", users=64)
    assert staging.targets.latency_avg_ms == 50
    assert staging.targets.latency_p99_ms == 90
    assert staging.targets.latency_max_ms == 250  # inherited
    # An environment without an entry gets the defaults untouched.
    assert (
        slo.load_slo(REPO, "prod", config=config).targets
        == slo.load_slo(REPO, None, config=config).targets
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID.replace("latency_avg_ms: 120", "latency_avg_ms: fast"),
            "defaults.targets.latency_avg",
        ),
        (VALID.replace("duration: 30s", "duration: soon"), "defaults.load.duration"),
        (VALID.replace("protocol: v1", "protocol: grpc"), "defaults.load.protocol"),
        (VALID.replace("error_ratio_max: 0", "error_ratio_max: 2"), "error_ratio_max"),
        (VALID.replace("staging:", "qa:"), "'qa' not in"),
        (VALID.replace("latency_p99_ms: 90", "latency_p95_ms: 90"), "latency_p95_ms"),
        (VALID.replace("  targets:\n    latency_avg_ms: 120\n", "  targets:\n"), "latency_avg_ms"),
        ("defaults: [unclosed", "not valid YAML"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, expected: str):
    config = write(tmp_path, text)
    with pytest.raises(slo.SloConfigError) as err:
        slo.load_slo(REPO, "staging", config=config)
    assert str(config) in str(err.value)
    assert expected in str(err.value)


def test_unknown_environment_name_is_an_error():
    with pytest.raises(slo.SloConfigError, match="unknown environment 'qa'"):
        slo.load_slo(REPO, "qa")


def test_loadtest_cli_rejects_bad_config_before_any_load(tmp_path: Path, kgops):
    config = write(tmp_path, VALID.replace("rate: 80", "rate: -3"))
    # Nothing listens on this port: the run must stop at the config, not at the connection.
    result = kgops("loadtest", "--target", "http://127.0.0.1:9", "--slo-config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "defaults.load.rate" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("500ms", 0.5), ("1h", 3600), (45, 45)]
)
def test_parse_duration(text, seconds):
    assert slo.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0s", "s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        slo.parse_duration(text)


def measured(**overrides) -> slo.Measured:
    values = dict(
        latency_avg_ms=3.0,
        latency_max_ms=20.0,
        latency_p99_ms=9.0,
        throughput_rps=80.0,
        error_ratio=0.0,
    )
    return slo.Measured(**{**values, **overrides})


def test_evaluate_thresholds_are_inclusive_and_each_target_can_fail():
    targets = slo.load_slo(REPO).targets
    at_limits = measured(latency_avg_ms=120, latency_max_ms=250, throughput_rps=80)
    assert all(c.passed for c in slo.evaluate(targets, at_limits))
    for field, bad, name in [
        ("latency_avg_ms", 120.01, "latency avg"),
        ("latency_max_ms", 250.5, "latency max"),
        ("throughput_rps", 79.9, "throughput"),
        ("error_ratio", 1 / 2400, "error ratio"),
    ]:
        failed = [c.target for c in slo.evaluate(targets, measured(**{field: bad})) if not c.passed]
        assert failed == [name]


def test_p99_target_is_checked_only_when_configured():
    prod = slo.load_slo(REPO, "prod").targets
    checks = slo.evaluate(prod, measured(latency_p99_ms=201))
    assert [c.target for c in checks if not c.passed] == ["latency p99"]
    assert "latency p99" not in [
        c.target for c in slo.evaluate(slo.load_slo(REPO).targets, measured())
    ]


def test_verdict_table_lists_every_target_with_its_result():
    checks = slo.evaluate(slo.load_slo(REPO).targets, measured(latency_max_ms=400))
    table = slo.verdict_table(checks).splitlines()
    cells = [[cell.strip() for cell in line.split(" | ")] for line in table]
    assert cells[0] == ["target", "threshold", "measured", "result"]
    # Header and rule line up: the rule crosses each column separator.
    assert [i for i, c in enumerate(table[0]) if c == "|"] == [
        i for i, c in enumerate(table[1]) if c == "+"
    ]
    rows = {row[0]: row[3] for row in cells[2:]}
    assert rows == {
        "latency avg": "PASS",
        "latency max": "FAIL",
        "throughput": "PASS",
        "error ratio": "PASS",
    }


def test_run_settings_override_the_environment_and_bad_flags_are_named(tmp_path: Path):
    config = write(tmp_path, VALID)
    run = slo.for_run(REPO, "staging", config, 120.0, "2m", protocol="v2")
    assert (run.load.rate, run.load.duration, run.load.protocol, run.load.users) == (
        120.0,
        120.0,
        "v2",
        64,
    )
    assert run.targets.latency_avg_ms == 50
    with pytest.raises(slo.SloConfigError, match="--duration: duration 'soon'"):
        slo.for_run(REPO, None, config, None, "soon")
    with pytest.raises(slo.SloConfigError, match="--rate: expected a positive"):
        slo.for_run(REPO, None, config, 0.0, None)
