"""The report directory of one load-test run: Locust CSV and HTML, summary.json and plot.png."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.html import get_html_report
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter
from matplotlib.figure import Figure  # no pyplot: renders with Agg, no display needed

from kserve_gitops.openloop import Plan


def write(root: Path, env: Environment, plan: Plan, summary: dict[str, Any]) -> Path:
    """Write everything into a temporary directory, then move it to root/<UTC timestamp>."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = root / f".tmp-{stamp}-{os.getpid()}"
    tmp.mkdir()
    try:
        _locust_csv(env, tmp / "locust")
        (tmp / "locust.html").write_text(get_html_report(env, show_download_link=False))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot(summary, tmp / "plot.png")
        final, n = root / stamp, 1
        while final.exists():  # two runs in the same second
            n += 1
            final = root / f"{stamp}-{n}"
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _locust_csv(env: Environment, base: Path) -> None:
    """Locust's own --csv files (stats, failures, exceptions, history) with the final numbers."""
    writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(base))
    # One pass of Locust's periodic writer loop writes every file; then stop it.
    greenlet = gevent.spawn(writer.stats_writer)
    gevent.sleep(0)
    greenlet.kill()
    writer.close_files()


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
    thr.axhline(
        summary["load"]["rate_rps"], color="grey", linestyle="--", linewidth=0.8, label="offered"
    )
    thr.set_ylabel("requests/s")
    thr.set_xlabel("seconds since the first scheduled request")
    thr.legend(loc="lower right", fontsize=8)
    thr.grid(True, alpha=0.3)
    fig.suptitle(
        f"{summary['protocol']} {summary['target_url']} at {summary['load']['rate_rps']:g} req/s: "
        f"{summary['verdict']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
