"""The report directory of one load-test run: Locust CSV and HTML, summary.json and plot.png."""

from __future__ import annotations

import gevent
from locust.env import Environment
from locust.html import get_html_report
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: renders with Agg, no display needed

from kserve_gitops.base import redact


class ReportDir:
    """A run's report, built in a hidden temporary directory and moved into place when done.

    Locust's CSV writer runs during the load (its history file gets a row a second, as with
    `locust --csv`); finish() writes the final rows, the HTML, summary.json and plot.png.
    """

    def __init__(self, root: Path, env: Environment) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.tmp = root / f".tmp-{self.stamp}-{os.getpid()}"
        self.tmp.mkdir()
        self.csv = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(self.tmp / "locust"))
        self.writer = gevent.spawn(self.csv.stats_writer)

    def finish(self, env: Environment, summary: dict[str, Any]) -> Path:
        try:
            self.writer.kill()
            self._final_csv_rows()
            (self.tmp / "locust.html").write_text(get_html_report(env, show_download_link=False))
            (self.tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            plot(summary, self.tmp / "plot.png")
            redact.sweep(self.tmp)  # Locust's CSV and HTML hold request names and errors
            final, n = self.root / self.stamp, 1
            while final.exists():  # two runs in the same second
                n += 1
                final = self.root / f"{self.stamp}-{n}"
            os.replace(self.tmp, final)
        except BaseException:
            self.abort()
            raise
        return final

    def abort(self) -> None:
        self.writer.kill()
        self.csv.close_files()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _final_csv_rows(self) -> None:
        # The periodic writer may be up to a second stale: rewrite the snapshot files with the
        # final numbers (Locust's own row writers) and add a last history row.
        c = self.csv
        for handle, writer, columns, rows in (
            (
                c.requests_csv_filehandle,
                c.requests_csv_writer,
                c.requests_csv_columns,
                c._requests_data_rows,
            ),
            (
                c.failures_csv_filehandle,
                c.failures_csv_writer,
                c.failures_columns,
                c._failures_data_rows,
            ),
            (
                c.exceptions_csv_filehandle,
                c.exceptions_csv_writer,
                c.exceptions_columns,
                c._exceptions_data_rows,
            ),
        ):
            handle.seek(0)
            handle.truncate()
            writer.writerow(columns)
            rows(writer)
        c._stats_history_data_rows(c.stats_history_csv_writer, time.time())
        c.close_files()


def plot(summary: dict[str, Any], path: Path) -> None:
    """Scheduled-time latency percentiles and throughput per second of the run."""
    rows = summary["timeline"]
    t = [r["t"] for r in rows]
    fig = Figure(figsize=(9, 6))
    lat, thr = fig.subplots(2, 1, sharex=True)
    for key in ("p50", "p95", "p99", "max"):
        # A second with nothing due (the tail of the run) is a gap, not a zero on a log scale.
        values = [r[f"{key}_ms"] or float("nan") for r in rows]
        lat.plot(t, values, label=key, linewidth=1.2)
    for key, style in (("avg", ":"), ("max", "--")):
        threshold = summary["targets"][f"latency_{key}_ms"]
        lat.axhline(threshold, color="grey", linestyle=style, linewidth=0.8, label=f"{key} target")
    lat.set_ylabel("latency from scheduled send (ms)")
    lat.set_yscale("log")
    lat.legend(loc="upper right", fontsize=8)
    lat.grid(True, which="both", alpha=0.3)
    thr.plot(t, [r["completed"] for r in rows], label="completed/s", linewidth=1.2)
    thr.plot(t, [r["failed"] for r in rows], label="failed/s", color="red", linewidth=1.2)
    load = summary["load"]
    # Ramped: from the first scheduled request to the last, then nothing more is offered.
    end = load.get("ramp_to_rps") or load["rate_rps"]
    thr.plot(
        [0, load["duration_s"]],
        [load["rate_rps"], end],
        color="grey",
        linestyle="--",
        linewidth=0.8,
        label="offered",
    )
    thr.set_ylabel("requests/s")
    thr.set_xlabel("seconds since the first scheduled request")
    thr.legend(loc="lower right", fontsize=8)
    thr.grid(True, alpha=0.3)
    fig.suptitle(
        f"{summary['protocol']} {summary['target_url']} at {_offered(load)}: {summary['verdict']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _offered(load: dict[str, Any]) -> str:
    ramp_to = load.get("ramp_to_rps")
    rate = f"{load['rate_rps']:g}"
    return f"{rate} -> {ramp_to:g} req/s" if ramp_to else f"{rate} req/s"
