"""The SLO table of the real-node e2e: the Locust load test of config/slo.yaml run against the
model served locally (as `make demo` does), then each target with the local figure beside each
cluster path's, from the summary.json each run wrote."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from kserve_gitops.base.tools import CommandError, Runner
from kserve_gitops.repo import Repo
from kserve_gitops.serving import process


def summary(reports: Path) -> dict[str, Any]:
    """The newest summary.json under a load test's report root."""
    found = sorted(reports.glob("*/summary.json"))
    if not found:
        raise FileNotFoundError(f"{reports}: no load test summary (the load test did not run)")
    return json.loads(found[-1].read_text())


def run_local(repo: Repo, runner: Runner, env: str, model: str, reports: Path) -> None:
    """The load test of `env` against the model served locally with KServe's runtime. Its
    verdict is the reference beside the cluster's, not the e2e's: a miss shows in the table."""
    local = process.start_background(repo, model_name=model, timeout=120)
    try:
        argv = [sys.executable, "-m", "kserve_gitops.load.loadtest", "--target", local.url]
        argv += ["--protocol", "v1", "--model", model, "--env", env, "--reports", str(reports)]
        with contextlib.suppress(CommandError):  # exit 1: a target missed, summary written
            runner.run(argv, timeout=900, stream=True)
    finally:
        local.stop()


def table(runs: dict[str, dict[str, Any]]) -> str:
    """target | threshold | <run> ... with each run's measured figure and PASS/FAIL."""
    names = list(runs)
    first = runs[names[0]]["checks"]
    head = ["target", "threshold", *names]
    rows = []
    for i, check in enumerate(first):
        cells = [check["target"], check["threshold"]]
        for name in names:
            c = runs[name]["checks"][i]
            cells.append(f"{c['measured']} {'PASS' if c['passed'] else 'FAIL'}")
        rows.append(cells)
    return tabulate(rows, head, tablefmt="presto", disable_numparse=True)
