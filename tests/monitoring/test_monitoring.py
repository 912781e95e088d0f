"""SLO rules and dashboard: generated from config/slo.yaml and committed unchanged, every
expression and panel query parsed by promtool, and the burn-rate alerts proven against
Prometheus' own rule evaluation (`promtool test rules`) with input series."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kserve_gitops.monitoring import alerts, grafana, promtool
from kserve_gitops.repo import render, slo
from tests import REPO
from tests.conftest import Kgops

ENVS = ("dev", "staging", "prod")
ISVC = 'namespace="models", inferenceservice="sklearn-iris"'


@pytest.fixture(scope="module")
def have_promtool() -> str:
    """promtool, or a skip with the reason; in CI (CI set) a missing promtool fails."""
    found = promtool.find(REPO)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and promtool is missing: {promtool.INSTALL_HINT}")
    pytest.skip(f"promtool not installed: {promtool.INSTALL_HINT}")


@pytest.mark.parametrize("module", ["alerts", "dashboard"])
def test_committed_files_are_the_generated_ones(kgops: Kgops, module: str) -> None:
    proc = kgops(module, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "3/3 generated files up to date" in proc.stdout


def test_a_hand_edit_is_caught_and_regeneration_repairs_it(repo_copy: Path, kgops: Kgops) -> None:
    rules = repo_copy / "environments/prod/platform/monitoring/slo-rules.yaml"
    rules.write_text(rules.read_text().replace("> 0.0144", "> 0.5"))
    proc = kgops("alerts", "--check", root=repo_copy)
    assert proc.returncode == 1
    assert "environments/prod/platform/monitoring/slo-rules.yaml: out of date" in proc.stderr
    assert kgops("alerts", root=repo_copy).returncode == 0
    assert kgops("alerts", "--check", root=repo_copy).returncode == 0


def test_the_monitoring_layer_ships_the_generated_objects() -> None:
    for env in ENVS:
        objs = render.kustomize_build(REPO, alerts.monitoring_dir(REPO, env))
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
        assert ("PrometheusRule", "kserve-slo") in kinds
        assert ("ConfigMap", "kserve-slo-dashboard") in kinds
        assert ("PodMonitor", "kserve-predictors") in kinds
        rule = next(o for o in objs if o["kind"] == "PrometheusRule")
        assert rule == alerts.prometheus_rule(env, slo.load_slo(REPO, env))
        board = next(o for o in objs if o["kind"] == "ConfigMap")
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"


def _alert(groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def test_thresholds_follow_the_slo_config(tmp_path: Path) -> None:
    base = slo.load_slo(REPO, "prod")
    groups = alerts.rule_groups("prod", base)
    # 99.9% availability: budget 0.001; 14.4x, 6x, 1x of it.
    assert "> 0.0144" in _alert(groups, "KServeErrorBudgetBurnFast")["expr"]
    assert "> 0.006" in _alert(groups, "KServeErrorBudgetBurnMedium")["expr"]
    assert "> 0.001" in _alert(groups, "KServeErrorBudgetBurnSlow")["expr"]
    assert "> 0.2\n" in _alert(groups, "KServeLatencyP99High")["expr"]  # prod p99 200 ms
    assert (
        "> 0.25\n"
        in _alert(alerts.rule_groups("dev", slo.load_slo(REPO, "dev")), "KServeLatencyP99High")[
            "expr"
        ]
    )

    config = tmp_path / "slo.yaml"
    text = slo.config_file(REPO).read_text()
    config.write_text(
        text.replace("availability: 0.999", "availability: 0.99").replace(
            "latency_p99_ms: 200", "latency_p99_ms: 150"
        )
    )
    changed = alerts.rule_groups("prod", slo.load_slo(REPO, "prod", config=config))
    assert changed != groups
    assert "> 0.144" in _alert(changed, "KServeErrorBudgetBurnFast")["expr"]
    assert "> 0.15\n" in _alert(changed, "KServeLatencyP99High")["expr"]
    board = grafana.dashboard("prod", slo.load_slo(REPO, "prod", config=config))
    latency = next(p for p in board["panels"] if p["title"] == "Predict latency percentiles")
    assert latency["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.15


def test_missing_objectives_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "slo.yaml"
    text = slo.config_file(REPO).read_text()
    start = text.index("  # Objectives of the running service")
    end = text.index("# Per-environment")
    config.write_text(
        text[:start] + text[end:].replace("    objectives:\n      availability: 0.999\n", "")
    )
    with pytest.raises(alerts.AlertConfigError, match=r"defaults.objectives.availability"):
        alerts.rule_groups("prod", slo.load_slo(REPO, "prod", config=config))


@pytest.mark.parametrize("env", ENVS)
def test_every_rule_parses(have_promtool: str, env: str) -> None:
    ok, out = promtool.check_rule_groups(REPO, alerts.rule_groups(env, slo.load_slo(REPO, env)))
    assert ok, out
    assert "SUCCESS: 17 rules found" in out


def test_promtool_rejects_a_broken_expression(have_promtool: str) -> None:
    groups = alerts.rule_groups("dev", slo.load_slo(REPO, "dev"))
    groups[0]["rules"][0]["expr"] = "sum by (namespace (rate(x[5m]))"
    ok, out = promtool.check_rule_groups(REPO, groups)
    assert not ok and "parse error" in out


@pytest.mark.parametrize("env", ENVS)
def test_every_dashboard_query_parses(have_promtool: str, env: str) -> None:
    queries = grafana.queries(grafana.dashboard(env, slo.load_slo(REPO, env)))
    assert len(queries) >= 8
    ok, out = promtool.check_queries(REPO, queries)
    assert ok, out
    ok, _ = promtool.check_queries(REPO, {"broken": 'rate(x{a="1"[5m])'})
    assert not ok


def _requests(ok_per_min: int, errors_per_min: int, minutes: int) -> list[dict[str, str]]:
    """queue-proxy request counters: `ok` 200s and `errors` 503s per minute."""
    series = []
    for code, per_min in (("200", ok_per_min), ("503", errors_per_min)):
        series.append(
            {
                "series": f'{alerts.REQUESTS}{{{ISVC}, http_response_status_code="{code}"}}',
                "values": f"0+{per_min}x{minutes}",
            }
        )
    return series


def _evaluated(env: str) -> list[dict[str, Any]]:
    """The env's rule groups without annotations: promtool would compare their rendered text too,
    and the tests here are about which alerts fire when (expressions, windows, `for`, labels)."""
    groups = alerts.rule_groups(env, slo.load_slo(REPO, env))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return groups


def _firing(name: str, severity: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {
        "namespace": "models",
        "inferenceservice": "sklearn-iris",
        "severity": severity,
        "env": "prod",
        **(extra or {}),
    }
    return {"exp_labels": labels}


def test_burn_rate_alerts_fire_and_stay_quiet_as_designed(have_promtool: str) -> None:
    """prod: 99.9% availability, budget 0.1%. 10% errors burns ~100x: both paging alerts fire
    (fast after its 2m `for`); 0.05% errors burns 0.5x: nothing fires even after 3 days."""
    groups = _evaluated("prod")
    fast = {"slo": "availability", "burn_rate": "14.4"}
    medium = {"slo": "availability", "burn_rate": "6"}
    tests = [
        {
            "interval": "1m",
            "input_series": _requests(900, 100, 120),
            "alert_rule_test": [
                # Not yet: the 1h window must be above 1.44% and the 2m `for` must pass.
                {"eval_time": "1m", "alertname": "KServeErrorBudgetBurnFast", "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": "KServeErrorBudgetBurnFast",
                    "exp_alerts": [_firing("KServeErrorBudgetBurnFast", "page", fast)],
                },
                {
                    "eval_time": "60m",
                    "alertname": "KServeErrorBudgetBurnMedium",
                    "exp_alerts": [_firing("KServeErrorBudgetBurnMedium", "page", medium)],
                },
            ],
            "promql_expr_test": [
                {
                    "expr": "round(kserve:request_errors:ratio_rate5m, 0.001)",
                    "eval_time": "30m",
                    "exp_samples": [{"labels": f"{{{ISVC}}}", "value": 0.1}],
                }
            ],
        },
        {
            # Healthy: 1 error in 2000 requests (0.05% < the 0.1% budget).
            "interval": "5m",
            "input_series": _requests(9995, 5, 12 * 24 * 3),
            "alert_rule_test": [
                {"eval_time": t, "alertname": a, "exp_alerts": []}
                for t in ("1h", "1d", "3d")
                for a in (
                    "KServeErrorBudgetBurnFast",
                    "KServeErrorBudgetBurnMedium",
                    "KServeErrorBudgetBurnSlow",
                )
            ],
        },
        {
            # A slow leak: 0.3% errors burns 3x the budget, below the paging factors 6 and 14.4,
            # so only the ticket opens once 3 days average above 1x (and its 1h `for` passed).
            "interval": "5m",
            "input_series": _requests(9970, 30, 12 * 24 * 4),
            "alert_rule_test": [
                {"eval_time": "3d2h", "alertname": "KServeErrorBudgetBurnFast", "exp_alerts": []},
                {"eval_time": "3d2h", "alertname": "KServeErrorBudgetBurnMedium", "exp_alerts": []},
                {
                    "eval_time": "3d2h",
                    "alertname": "KServeErrorBudgetBurnSlow",
                    "exp_alerts": [
                        _firing(
                            "KServeErrorBudgetBurnSlow",
                            "ticket",
                            {"slo": "availability", "burn_rate": "1"},
                        )
                    ],
                },
            ],
        },
    ]
    ok, out = promtool.test_rule_groups(REPO, groups, tests)
    assert ok, out


def _latency_buckets(slow_share: float, minutes: int) -> list[dict[str, str]]:
    """request_predict_seconds: 100 requests/min, `slow_share` of them between 0.25 and 0.5 s,
    the rest under 25 ms (KServe's buckets)."""
    slow = round(100 * slow_share)
    fast = 100 - slow
    series = []
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"):
        per_min = fast if float(le) <= 0.25 else 100
        if float(le) < 0.025:
            per_min = 0
        series.append(
            {
                "series": f'request_predict_seconds_bucket{{{ISVC}, le="{le}"}}',
                "values": f"0+{per_min}x{minutes}",
            }
        )
    return series


def test_latency_alert_follows_the_p99_target(have_promtool: str) -> None:
    """prod p99 target 200 ms: 5% of requests at 250-500 ms puts p99 there and pages; 0.5% slow
    requests keep p99 within the fast buckets, so nothing fires."""
    groups = _evaluated("prod")
    tests = [
        {
            "interval": "1m",
            "input_series": _latency_buckets(0.05, 90),
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "KServeLatencyP99High",
                    "exp_alerts": [_firing("KServeLatencyP99High", "page", {"slo": "latency"})],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": _latency_buckets(0.005, 90),
            "alert_rule_test": [
                {"eval_time": "60m", "alertname": "KServeLatencyP99High", "exp_alerts": []}
            ],
        },
    ]
    ok, out = promtool.test_rule_groups(REPO, groups, tests)
    assert ok, out


def test_promtool_test_detects_a_wrong_expectation(have_promtool: str) -> None:
    """The harness itself: a test expecting the fast alert on healthy traffic fails."""
    groups = _evaluated("prod")
    tests = [
        {
            "interval": "1m",
            "input_series": _requests(1000, 0, 60),
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "KServeErrorBudgetBurnFast",
                    "exp_alerts": [_firing("KServeErrorBudgetBurnFast", "page")],
                }
            ],
        }
    ]
    ok, out = promtool.test_rule_groups(REPO, groups, tests)
    assert not ok and "KServeErrorBudgetBurnFast" in out


def test_missing_promtool_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMTOOL", str(tmp_path / "nowhere"))
    assert promtool.find(REPO) is None
    with pytest.raises(promtool.PromtoolError, match="make promtool"):
        promtool.require(REPO)


def test_generated_files_live_in_the_environment_overlays() -> None:
    for path in [*alerts.files(REPO), *grafana.files(REPO)]:
        assert REPO.rel(path).startswith("environments/")


def test_objectives_are_schema_checked(tmp_path: Path) -> None:
    config = tmp_path / "slo.yaml"
    config.write_text(
        slo.config_file(REPO).read_text().replace("availability: 0.999", "availability: 1.5")
    )
    with pytest.raises(slo.SloConfigError, match=r"environments.prod.objectives.availability"):
        slo.load_slo(REPO, "prod", config=config)
