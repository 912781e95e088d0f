"""SLO recording rules and multi-window, multi-burn-rate alerts, generated per environment from
config/slo.yaml (the file the load tests read), as a Prometheus Operator PrometheusRule.

    kgops alerts            # (re)write environments/<env>/platform/monitoring/
    kgops alerts --check    # exit 1 if a committed file is out of date

Availability: the error budget is 1 - objectives.availability over 30 days; the burn-rate
windows and factors are the Google SRE workbook's (chapter "Alerting on SLOs"): both the long and
the short window must burn faster than the factor, so an alert fires fast and stops soon after
the errors stop. Latency: the p99 of KServe's predict histogram against the latency target
(targets.latency_p99_ms, else targets.latency_max_ms), over the same window pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.repo import Repo, generated, slo

MONITORING_NAMESPACE = "kserve-monitoring"
RULE_FILE = "slo-rules.yaml"
# Series from the predictor pods, labelled by our PodMonitor (platform/monitoring) with the
# namespace and the InferenceService they serve.
BY = "namespace, inferenceservice"
# Knative's queue-proxy (OpenTelemetry, Prometheus exporter): one histogram of every request it
# proxied to the model server, with the HTTP status code.
REQUESTS = "kn_serving_invocation_duration_seconds_count"
ERRORS_MATCH = 'http_response_status_code=~"5.."'
# KServe's model server: time spent in predict (seconds), per model.
PREDICT_BUCKETS = "request_predict_seconds_bucket"
SLO_WINDOW = "30d"


@dataclass(frozen=True)
class BurnRate:
    """An alert when both windows burn the budget `factor` times faster than sustainable."""

    name: str
    long: str
    short: str
    factor: float
    severity: str  # page: someone gets up; ticket: the next working day
    for_: str


BURN_RATES = (
    BurnRate("Fast", "1h", "5m", 14.4, "page", "2m"),  # 2% of a 30-day budget in 1 hour
    BurnRate("Medium", "6h", "30m", 6.0, "page", "15m"),  # 5% in 6 hours
    BurnRate("Slow", "3d", "6h", 1.0, "ticket", "1h"),  # 10% in 3 days
)
# The latency pairs: a sustained p99 above target pages, a slow drift opens a ticket.
LATENCY_WINDOWS = (("1h", "5m", "page", "5m"), ("6h", "30m", "ticket", "30m"))
QUANTILES = (0.5, 0.9, 0.99)


class AlertConfigError(ValueError):
    """The SLO config lacks what the rules need; the message names the file and field."""


def _num(value: float) -> str:
    """A float as PromQL writes it, without binary noise (14.4 * 0.005 -> 0.072)."""
    return f"{value:.6g}"


def error_ratio(window: str) -> str:
    return f"kserve:request_errors:ratio_rate{window}"


def p99(window: str) -> str:
    return f"kserve:request_predict_seconds:p99_rate{window}"


def latency_target_ms(targets: slo.Targets) -> float:
    return targets.latency_p99_ms if targets.latency_p99_ms is not None else targets.latency_max_ms


def window_seconds(window: str) -> int:
    """Seconds of a PromQL range such as 5m, 6h or 3d."""
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]


def _windows() -> list[str]:
    found = {w for b in BURN_RATES for w in (b.long, b.short)}
    found |= {w for lw in LATENCY_WINDOWS for w in lw[:2]}
    return sorted(found, key=window_seconds)


def recording_rules() -> list[dict[str, Any]]:
    """Request rate, error ratio per burn-rate window, predict-latency quantiles."""
    rules: list[dict[str, Any]] = [
        {"record": "kserve:requests:rate5m", "expr": f"sum by ({BY}) (rate({REQUESTS}[5m]))"}
    ]
    for w in _windows():
        rules.append(
            {
                "record": error_ratio(w),
                "expr": (
                    f"sum by ({BY}) (rate({REQUESTS}{{{ERRORS_MATCH}}}[{w}]))\n"
                    f"/\nsum by ({BY}) (rate({REQUESTS}[{w}]))"
                ),
            }
        )
    latency_windows = sorted({w for lw in LATENCY_WINDOWS for w in lw[:2]}, key=window_seconds)
    for w in latency_windows:
        rules.append(
            {
                "record": p99(w),
                "expr": (
                    f"histogram_quantile(0.99, sum by ({BY}, le) (rate({PREDICT_BUCKETS}[{w}])))"
                ),
            }
        )
    for q in QUANTILES:
        if q != 0.99:
            rules.append(
                {
                    "record": f"kserve:request_predict_seconds:p{round(q * 100)}_rate5m",
                    "expr": (
                        f"histogram_quantile({q}, sum by ({BY}, le) (rate({PREDICT_BUCKETS}[5m])))"
                    ),
                }
            )
    return rules


def alert_rules(env: str, spec: slo.Slo) -> list[dict[str, Any]]:
    if spec.objectives is None:
        raise AlertConfigError(
            f"{spec.source}: defaults.objectives.availability: required to generate the "
            "burn-rate alerts (a fraction such as 0.995)"
        )
    availability = spec.objectives.availability
    budget = 1 - availability
    target_ms = latency_target_ms(spec.targets)
    rules: list[dict[str, Any]] = []
    for b in BURN_RATES:
        threshold = _num(b.factor * budget)
        rules.append(
            {
                "alert": f"KServeErrorBudgetBurn{b.name}",
                "expr": (
                    f"{error_ratio(b.long)} > {threshold}\n"
                    f"and\n{error_ratio(b.short)} > {threshold}"
                ),
                "for": b.for_,
                "labels": {
                    "severity": b.severity,
                    "slo": "availability",
                    "env": env,
                    "burn_rate": _num(b.factor),
                },
                "annotations": {
                    "summary": (
                        f"{{{{ $labels.namespace }}}}/{{{{ $labels.inferenceservice }}}} burns its "
                        f"error budget {_num(b.factor)}x too fast ({b.long} and {b.short})"
                    ),
                    "description": (
                        f"More than {_num(b.factor * budget * 100)}% of the requests failed with "
                        f"a 5xx over the last {b.long} and {b.short} (now "
                        "{{ $value | humanizePercentage }} over "
                        f"{b.long}). Objective: {_num(availability * 100)}% available over "
                        f"{SLO_WINDOW} ({spec.source}, env {env})."
                    ),
                },
            }
        )
    seconds = _num(target_ms / 1000)
    for long, short, severity, for_ in LATENCY_WINDOWS:
        rules.append(
            {
                "alert": "KServeLatencyP99High" + ("" if severity == "page" else "Sustained"),
                "expr": f"{p99(long)} > {seconds}\nand\n{p99(short)} > {seconds}",
                "for": for_,
                "labels": {"severity": severity, "slo": "latency", "env": env},
                "annotations": {
                    "summary": (
                        "{{ $labels.namespace }}/{{ $labels.inferenceservice }} predict p99 "
                        f"above {_num(target_ms)} ms ({long} and {short})"
                    ),
                    "description": (
                        f"The 99th percentile of request_predict_seconds exceeded the "
                        f"{_num(target_ms)} ms target over {long} and over {short} (now "
                        "{{ $value | humanizeDuration }} over "
                        f"{long}; {spec.source}, env {env})."
                    ),
                },
            }
        )
    return rules


def rule_groups(env: str, spec: slo.Slo) -> list[dict[str, Any]]:
    """Short windows every 30s; the 6h and 3d ranges are costly and change slowly: every 5m."""
    rules = recording_rules()
    window = {r["record"]: r["record"].rsplit("rate", 1)[-1] for r in rules}
    short = [r for r in rules if window_seconds(window[r["record"]]) <= 3600]
    long = [r for r in rules if window_seconds(window[r["record"]]) > 3600]
    return [
        {"name": "kserve-slo.recording", "interval": "30s", "rules": short},
        {"name": "kserve-slo.recording-long", "interval": "5m", "rules": long},
        {"name": "kserve-slo.alerts", "rules": alert_rules(env, spec)},
    ]


def prometheus_rule(env: str, spec: slo.Slo) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "kserve-slo",
            "namespace": MONITORING_NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "kserve-gitops",
                "kserve-gitops/monitoring": "true",
                "environment": env,
            },
        },
        "spec": {"groups": rule_groups(env, spec)},
    }


def monitoring_dir(repo: Repo, env: str) -> Path:
    return repo.environment_dir(env) / "platform" / "monitoring"


def per_environment(
    repo: Repo,
    name: str,
    build: Callable[[str, slo.Slo], dict[str, Any]],
    command: str,
    about: str,
) -> dict[Path, str]:
    """Every environment's generated monitoring file `name` and its text: `build(env, SLO of
    env)` under a header that names the command and config/slo.yaml (alerts and dashboards)."""
    out = {}
    for env in repo.environment_names:
        header = (
            f"Generated by `{command}` from {repo.rel(slo.config_file(repo))} "
            f"(env {env}): do not edit.\n{about}"
        )
        obj = build(env, slo.load_slo(repo, env))
        out[monitoring_dir(repo, env) / name] = generated.manifest_text(obj, header)
    return out


def files(repo: Repo) -> dict[Path, str]:
    """Every environment's generated rule file and its text."""
    about = (
        "SLO recording rules and burn-rate alerts "
        "(kserve_gitops/monitoring/alerts.py explains the windows)."
    )
    return per_environment(repo, RULE_FILE, prometheus_rule, "kgops alerts", about)


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    errors = (AlertConfigError, slo.SloConfigError)
    command = "kgops alerts"
    return generated.main(repo, argv, __doc__.splitlines()[0], lambda: files(repo), errors, command)


if __name__ == "__main__":
    raise SystemExit(main())
