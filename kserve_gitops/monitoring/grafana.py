"""The Grafana dashboard of the model SLOs, generated per environment from config/slo.yaml (the
threshold lines are the environment's targets), shipped as a ConfigMap that Grafana's dashboard
sidecar loads (label grafana_dashboard: "1").

    kgops dashboard            # (re)write environments/<env>/platform/monitoring/
    kgops dashboard --check    # exit 1 if a committed file is out of date
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kserve_gitops.monitoring import alerts
from kserve_gitops.repo import Repo, generated, slo

DASHBOARD_FILE = "dashboard.yaml"
UID = "kserve-slo"
SEL = 'namespace="$namespace", inferenceservice=~"$inferenceservice"'
PREDICTORS_JOB = "kserve-monitoring/kserve-predictors"


def _target(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "refId": legend[:1].upper() + str(len(legend))}


def _panel(
    pid: int,
    title: str,
    unit: str,
    targets: list[tuple[str, str]],
    grid: tuple[int, int],
    threshold: float | None = None,
    description: str = "",
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    refs = [_target(expr, legend) for expr, legend in targets]
    for i, ref in enumerate(refs):
        ref["refId"] = chr(ord("A") + i)
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": grid[0], "y": grid[1], "w": 12, "h": 8},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}},
            },
            "overrides": [],
        },
        "targets": refs,
    }


def panels(spec: slo.Slo) -> list[dict[str, Any]]:
    """Request rate, latency percentiles against the target, errors against the budget,
    replicas and cold starts; every query filtered by the dashboard's variables."""
    target_s = alerts.latency_target_ms(spec.targets) / 1000
    budget = 1 - spec.objectives.availability if spec.objectives else None
    quantiles = [
        (f"kserve:request_predict_seconds:p{round(q * 100)}_rate5m{{{SEL}}}", f"p{round(q * 100)}")
        for q in alerts.QUANTILES
    ]
    return [
        _panel(
            1,
            "Request rate",
            "reqps",
            [
                (f"sum by (inferenceservice) (kserve:requests:rate5m{{{SEL}}})", "all"),
                (
                    f"sum by (inferenceservice, http_response_status_code) "
                    f"(rate({alerts.REQUESTS}{{{SEL}}}[5m]))",
                    "code",
                ),
            ],
            (0, 0),
            description="Requests/s through Knative's queue-proxy, total and per status code.",
        ),
        _panel(
            2,
            "Predict latency percentiles",
            "s",
            quantiles,
            (12, 0),
            threshold=target_s,
            description=(
                f"KServe request_predict_seconds; red line: the {target_s * 1000:g} ms latency "
                f"target ({spec.source})."
            ),
        ),
        _panel(
            3,
            "Error ratio (5xx)",
            "percentunit",
            [
                (f"{alerts.error_ratio('5m')}{{{SEL}}}", "5m"),
                (f"{alerts.error_ratio('1h')}{{{SEL}}}", "1h"),
            ],
            (0, 8),
            threshold=budget,
            description="5xx share of the requests; red line: the error budget (1 - availability).",
        ),
        _panel(
            4,
            "Ready replicas",
            "short",
            [
                (
                    "count by (inferenceservice) (count by (inferenceservice, pod) "
                    f'(up{{job="{PREDICTORS_JOB}", {SEL}}} == 1))',
                    "ready",
                ),
                (
                    "sum by (kn_service_name) (kn_revision_pods_desired"
                    '{k8s_namespace_name="$namespace"})',
                    "desired",
                ),
            ],
            (12, 8),
            description=(
                "Predictor pods answering the scrape (0 while scaled to zero) and the pods "
                "Knative's autoscaler wants per predictor."
            ),
        ),
        _panel(
            5,
            "Cold starts (predictor pods started, last 5m)",
            "short",
            [
                (
                    "count by (inferenceservice) "
                    f'((time() - process_start_time_seconds{{job="{PREDICTORS_JOB}", {SEL}}}) '
                    "< 300)",
                    "started",
                ),
            ],
            (0, 16),
            description=(
                "Model server processes younger than 5 minutes: scale-ups and scale-from-zero."
            ),
        ),
    ]


def dashboard(env: str, spec: slo.Slo) -> dict[str, Any]:
    variables = [
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Data source",
        },
        {
            "name": "namespace",
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": "label_values(kserve:requests:rate5m, namespace)",
            "refresh": 2,
        },
        {
            "name": "inferenceservice",
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": (
                'label_values(kserve:requests:rate5m{namespace="$namespace"}, inferenceservice)'
            ),
            "includeAll": True,
            "multi": True,
            "refresh": 2,
        },
    ]
    return {
        "uid": f"{UID}-{env}",
        "title": f"KServe model SLOs ({env})",
        "tags": ["kserve", "slo", env],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels(spec),
    }


def queries(board: dict[str, Any]) -> dict[str, str]:
    """Panel title/refId -> PromQL, with the dashboard variables replaced by sample values so
    the query parses as Prometheus would receive it."""
    out = {}
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$namespace", "models").replace("$inferenceservice", ".*")
            out[f"{panel['title']} {target['refId']}"] = expr
    return out


def config_map(env: str, spec: slo.Slo) -> dict[str, Any]:
    board = dashboard(env, spec)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "kserve-slo-dashboard",
            "namespace": alerts.MONITORING_NAMESPACE,
            "labels": {
                "grafana_dashboard": "1",
                "app.kubernetes.io/part-of": "kserve-gitops",
                "environment": env,
            },
        },
        "data": {"kserve-slo.json": json.dumps(board, indent=2, sort_keys=True) + "\n"},
    }


def files(repo: Repo) -> dict[Path, str]:
    """Every environment's generated dashboard file and its text."""
    about = (
        "Grafana dashboard for the dashboard sidecar "
        '(label grafana_dashboard: "1"), or import the JSON in data by hand.\n'
        "yamllint disable rule:line-length"
    )
    return alerts.per_environment(repo, DASHBOARD_FILE, config_map, "kgops dashboard", about)


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    errors = (slo.SloConfigError,)
    command = "kgops dashboard"
    return generated.main(repo, argv, __doc__.splitlines()[0], lambda: files(repo), errors, command)


if __name__ == "__main__":
    raise SystemExit(main())
