"""The SLO view in Locust's web dashboard, added the way Locust documents extending its UI.

An extra tab "SLO" (template_args extended_tabs/extended_tables, its rows in the
extended_stats of every /stats/requests poll) shows the targets of config/slo.yaml for the
environment next to the live figures: latency avg/p50/p95/p99/max from the scheduled send time,
offered and achieved rate, errors, and the verdict of each target so far. When the test stops
the rows hold the final verdict, the same numbers as the run's summary.json, and the report
folder. Download Data gets the same rows as a CSV.
"""

from __future__ import annotations

from kserve_gitops.load import coordinator, report, tally
from kserve_gitops.load.settings import Settings
from kserve_gitops.load.summary import LoadOptions, build_summary, generator_figures
from locust.env import Environment
from locust.runners import MasterRunner

import csv
import io
import json
import time
from dataclasses import dataclass

from flask import Response, make_response, request

from kserve_gitops.repo import slo

TAB = "slo"
CSV_PATH = "/kgops/slo.csv"
COLUMNS = [("figure", "Figure"), ("value", "Value"), ("target", "Target"), ("verdict", "Verdict")]


@dataclass
class Final:
    """What a stopped run adds to its rows."""

    report_dir: str | None
    error: str | None = None  # the report could not be written


# Figure rows in order, and the SLO check each is judged by (None: shown, not judged).
FIGURES = [
    ("latency avg", "latency avg"),
    ("latency p50", None),
    ("latency p95", None),
    ("latency p99", "latency p99"),
    ("latency max", "latency max"),
    ("offered rate", None),
    ("achieved rate", "throughput"),
    ("completed requests", None),
    ("errors", None),
    ("error ratio", "error ratio"),
    ("generators", None),
]


def rows(
    totals: tally.Totals | None,
    targets: slo.Targets,
    *,
    rate: float,
    state: str,
    final: Final | None = None,
) -> list[dict[str, str]]:
    """The SLO table: one row per figure, with its target and verdict where it has one.
    Before the first start (totals None) the figures are empty and the targets shown."""
    measured = totals.measured() if totals is not None else slo.Measured(0, 0, 0, 0, 0)
    checks = {c.target: c for c in slo.evaluate(targets, measured)}
    values: dict[str, str] = {}
    if totals is not None:
        lat = totals.latency()
        values = {f"latency {k}": f"{lat[k]:.2f} ms" for k in ("p50", "p95", "p99")}
        values |= {
            "offered rate": f"{rate:g} req/s",
            "completed requests": str(totals.recorder.requests),
            "errors": f"{totals.errors} ({totals.recorder.failures} failed,"
            f" {totals.unfinished} unsent or unanswered)",
            "generators": _generators(totals),
        }
    out = [{"figure": "state", "value": state, "target": "", "verdict": ""}]
    if totals is not None:
        verdict = "PASS" if all(c.passed for c in checks.values()) else "FAIL"
        out.append(
            {
                "figure": "verdict",
                "value": "final" if final else "so far",
                "target": "",
                "verdict": verdict,
            }
        )
    for figure, check_name in FIGURES:
        check = checks.get(check_name) if check_name else None
        if totals is None and check is None:
            continue
        value = values.get(figure, "")
        if check is not None and totals is not None:
            value = check.measured  # the exact string of the verdict table and summary.json
        out.append(
            {
                "figure": figure,
                "value": value,
                "target": check.threshold if check else "",
                "verdict": ("PASS" if check.passed else "FAIL") if check and totals else "",
            }
        )
    for lost in totals.lost if totals is not None else []:
        out.append(
            {
                "figure": "lost worker",
                "value": f"{lost['source']} (share {lost['index'] + 1} of {lost['of']}):"
                f" {lost['unsent']} slots counted as errors",
                "target": "",
                "verdict": "",
            }
        )
    if final is not None:
        report_value = final.report_dir or f"not written: {final.error}"
        out.append({"figure": "report", "value": report_value, "target": "", "verdict": ""})
    return out


def _generators(totals: tally.Totals) -> str:
    gens = totals.generators
    if len(gens) == 1 and gens[0]["source"] == "local":
        return "1 process"
    return f"{len(gens)} workers" + (f", {len(totals.lost)} lost" if totals.lost else "")


def to_csv(table: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([title for _key, title in COLUMNS])
    for r in table:
        writer.writerow([r[key] for key, _title in COLUMNS])
    return buf.getvalue()


class Dashboard:
    """The SLO view of one Locust web UI, for every run started from it."""

    def __init__(
        self,
        environment: Environment,
        run: coordinator.Coordinator,
        settings: Settings,
        config: slo.Slo,
    ) -> None:
        self.environment = environment
        self.run = run
        self.settings = settings
        self.config = config
        self.final: Final | None = None
        self._final_totals: tally.Totals | None = None
        self.reports: report.ReportDir | None = None
        self.started_at = self.cpu0 = 0.0
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        # After the coordinator's own listener: workers have drained and sent their finals, and
        # Locust still reports the test as running, so the UI polls once more and shows this.
        events.test_stopping.add_listener(self._on_test_stopping)

    def table(self) -> list[dict[str, str]]:
        runner = self.environment.runner
        if self.run.spec is None:
            return rows(None, self.config.targets, rate=self.settings.rate, state="not started")
        totals: tally.Totals | None
        if self.final is not None:
            totals = self._final_totals
            state = "stopped"
        else:
            totals = self.run.totals(final=False)
            state = f"{runner.state} (live)" if runner else "live"
        return rows(
            totals, self.config.targets, rate=self.settings.rate, state=state, final=self.final
        )

    def _on_test_start(self, **_kwargs) -> None:
        self.final = None
        self.started_at, self.cpu0 = time.time(), coordinator.cpu_s()
        self.reports = report.ReportDir(self.settings.reports, self.environment)

    def _on_test_stopping(self, **_kwargs) -> None:
        if self.run.spec is None or self.reports is None:
            return
        self._final_totals = totals = self.run.totals(final=True)
        summary = build_summary(
            self.settings.repo,
            self._options(),
            self.config.targets,
            totals,
            self.environment,
            env_name=self.settings.env,
            slo_source=self.config.source,
            started_at=self.started_at,
            finished_at=time.time(),
            first_slot_at=self.run.wall_t0,
            generator=generator_figures(
                totals,
                coordinator.cpu_s() - self.cpu0,
                time.time() - self.started_at,
                distributed=isinstance(self.environment.runner, MasterRunner),
            ),
        )
        reports, self.reports = self.reports, None
        try:
            report_dir: str | None = self.settings.repo.rel(
                reports.finish(self.environment, summary)
            )
            error = None
        except OSError as exc:
            report_dir, error = None, str(exc)
        self.final = Final(report_dir, error)
        checks = [slo.Check(**c) for c in summary["checks"]]
        print(f"\nSLO verdict ({self.config.source}, env {self.settings.env or '-'}):")
        print(slo.verdict_table(checks))
        print(f"{summary['verdict']}  report: {report_dir or error}", flush=True)

    def _options(self) -> LoadOptions:
        env = self.environment
        user_class = env.user_classes[0] if env.user_classes else None
        runner = env.runner
        return LoadOptions(
            target=env.host or "",
            protocol=getattr(user_class, "protocol", "v1"),
            rate=self.settings.rate,
            duration=max(0.0, self.run.elapsed_s()),
            users=runner.target_user_count if runner and runner.target_user_count else 0,
            host_header=self.settings.host_header,
            model=self.settings.model,
        )


def install(
    environment: Environment,
    run: coordinator.Coordinator,
    settings: Settings,
    config: slo.Slo,
) -> Dashboard:
    web_ui = environment.web_ui
    assert web_ui is not None
    dash = Dashboard(environment, run, settings, config)
    # Kept across renders: update_template_args() merges its own keys over these.
    web_ui.template_args.update(
        {
            "extended_tabs": [{"title": "SLO", "key": TAB}],
            "extended_tables": [
                {"key": TAB, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
            ],
            "extended_csv_files": [{"href": "." + CSV_PATH, "title": "Download SLO CSV"}],
        }
    )

    @web_ui.app.after_request
    def _slo_rows(response: Response) -> Response:
        if request.path.endswith("/stats/requests") and response.is_json:
            doc = response.get_json()
            doc["extended_stats"] = [{"key": TAB, "data": dash.table()}]
            response.set_data(json.dumps(doc))
        return response

    @web_ui.app.route(CSV_PATH)
    @web_ui.auth_required_if_enabled
    def _slo_csv() -> Response:
        response = make_response(to_csv(dash.table()))
        response.headers["Content-Type"] = "text/csv"
        response.headers["Content-Disposition"] = "attachment;filename=slo.csv"
        return response

    return dash
