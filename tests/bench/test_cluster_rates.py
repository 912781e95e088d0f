"""KServe's table and the cold start phases of `make bench-cluster`, from recorded figures."""

from __future__ import annotations

from kserve_gitops.bench import cluster_rates, rounds

POD = {
    "metadata": {"creationTimestamp": "2026-12-07T15:00:02Z"},
    "status": {
        "conditions": [
            {"type": "PodScheduled", "lastTransitionTime": "2026-12-07T15:00:03Z"},
            {"type": "Ready", "lastTransitionTime": "2026-12-07T15:00:12Z"},
        ],
        "containerStatuses": [
            {"name": "queue-proxy", "state": {"running": {"startedAt": "2026-12-07T15:00:04Z"}}},
            {
                "name": "kserve-container",
                "state": {"running": {"startedAt": "2026-12-07T15:00:05Z"}},
            },
        ],
    },
}


def test_phases_from_the_pods_timestamps() -> None:
    requested = cluster_rates._time("2026-12-07T15:00:00Z") + 0.5
    assert cluster_rates.phases(POD, requested) == {
        "request -> pod created": 2.0,  # the request at 15:00:00.5 counts from 15:00:00
        "created -> scheduled": 1.0,
        "scheduled -> model server started": 2.0,
        "started -> Ready (model loaded, probe)": 7.0,
    }


def test_cold_start_table_shows_median_range_and_every_sample() -> None:
    samples = [{"first answer": t} for t in (10.0, 12.0, 11.0, 30.0, 10.5)]
    row = cluster_rates.cold_start_table(samples).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["first answer", "11.00", "10.00", "30.00", "10.0 12.0 11.0 30.0 10.5"]


def test_rate_table_sets_each_row_beside_kserves() -> None:
    result = rounds.Rounds(order=[])
    for n, avg in enumerate((2.0, 3.1, 2.5), start=1):
        metrics = dict.fromkeys(cluster_rates.RATE_FIGURES, 1.0) | {"avg_ms": avg}
        result.records.append(rounds.Record(n, "service@5", [0, 0, 0], 0, 1, metrics))
        slow = dict(metrics, avg_ms=avg * 4)
        result.records.append(rounds.Record(n, "service@50", [0, 0, 0], 0, 1, slow))
    points = [cluster_rates.RatePoint("service", "http://x", r) for r in (5, 50, 7)]
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in cluster_rates.rate_table(result, points).splitlines()[2:]
    ]
    assert rows[0][2] == "2.50 [2.00-3.10]"
    assert rows[0][-1] == "6.2 / 7.6 ms: ours x2.48 faster"  # 6.2 / 2.5
    assert rows[1][-1] == "5.7 / 6.8 ms: ours x1.75 slower"  # 10.0 / 5.7
    assert rows[2][2] == "-" and rows[2][-1] == "-"  # not measured, and no KServe row
