"""The cluster-path report (bench.cluster_report) from a made-up record: medians with their
range per path, the ratio to local refused as a verdict when the rounds disagree, KServe's
rows beside ours, what the environment declares, and an older record without the new parts."""

from __future__ import annotations

from kserve_gitops.bench import cluster_report, rounds
from tests import markdown_rows
from tests.bench.cluster_record import record


def test_each_path_has_its_median_and_range() -> None:
    text = cluster_report.markdown(record())
    rows = {row[0]: row for row in markdown_rows(text.split("## Ratio")[0])}
    assert rows["service"][1] == "6.00 [5.00-9.00]"
    assert rows["port-forward"][1] == "8.00 [8.00-8.00]"
    assert rows["activator"][1] == "7.00 [6.00-8.00]"
    assert rows["activator"][-1] == "12.00 [12.00-12.00]"  # the generator's CPU
    assert "service / local: x2.25 (x2.00-x2.50, 3 rounds); local better in every round" in text


def test_a_ratio_that_crosses_one_gives_no_verdict() -> None:
    doc = record()
    for r in doc["records"]:
        if r["config"] == "service":
            r["metrics"]["avg_ms"] = {1: 1, 2: 6, 3: 2}[r["round"]]
    text = cluster_report.markdown(doc)
    assert f"service / local: x0.50 (x0.50-x2.00, 3 rounds); {rounds.NO_VERDICT}" in text


def test_kserves_rows_the_declared_config_and_the_highest_rates() -> None:
    text = cluster_report.markdown(record(), plots="benchmarks/")
    assert "containerConcurrency 0 (unlimited) (KServe's run: 8); target-burst-capacity 211" in text
    rates = markdown_rows(text.split("## KServe's table")[1].split("### Highest")[0])
    assert [r[:2] for r in rates[1:]] == [
        ["service", "5"],
        ["activator", "5"],
        ["service", "500"],
        ["activator", "500"],
    ]
    highest = {r[0]: r for r in markdown_rows(text.split("### Highest")[1].split("![")[0])}
    assert highest["service"][1:3] == ["800", "10.33"]
    assert highest["service"][-2] == "1600"  # the first failing rate
    assert (
        "serverless: 399 / 3700 ms, 100%; ours at 800/s: p99 x119.35 faster"
        in highest["service"][-1]
    )
    assert "raw with HPA: 8000 / 20300 ms, 93.7%" in highest["service"][-1]
    assert highest["activator"][1] == "below 100"
    assert "![latency per rate per path](benchmarks/cluster-rates.png)" in text
    assert "![replicas and latency over time](benchmarks/cluster-scaleout.png)" in text


def test_the_scaleout_states_the_kpa_and_the_machines_bound() -> None:
    text = cluster_report.markdown(record())
    section = text.split("## Scale-out under a rising open-loop load")[1]
    assert "72 requests, 2 failed; generator 14.5% of one core" in section
    assert "Ready pods: at most 1, first reached at 1 s" in section
    assert "stable window 60 s, panic window 10% of it (6 s), panic threshold 200%" in section
    assert "One node with 2 cores" in section and "maxReplicas 1 bounds the scale-out" in section


def test_an_older_record_renders_what_it_has() -> None:
    doc = record()
    for key in ("maxima", "autoscaling", "scaleout", "knobs"):
        doc.pop(key)
    for key in ("rate_rounds", "rate_duration"):
        doc["meta"].pop(key)
    assert "`activator` is Knative's activator Service" in cluster_report.markdown(doc)
    doc["records"] = [r for r in doc["records"] if r["config"] != "activator"]
    text = cluster_report.markdown(doc)
    assert "## KServe's table through the real node" in text and "### Highest" not in text
    assert "Interleaved rounds per path and rate" in text
    assert "## Cold start from zero pods (5 samples)" in text
    assert "Scale-out" not in text and "Declared by" not in text
    assert "activator" not in text.split("## Machine")[0]  # a path the record does not have
