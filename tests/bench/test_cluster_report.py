"""The cluster-path benchmark's report from made-up rounds: medians with their range per path,
and the ratio to local refused as a verdict when the rounds disagree."""

from __future__ import annotations

from kserve_gitops.bench import rounds
from kserve_gitops.bench.cluster import PATHS, markdown
from tests import markdown_rows

META = {
    "when": "2026-12-07 12:00 UTC",
    "rounds": 3,
    "duration": 20.0,
    "rate": 80.0,
    "env": "dev",
    "machine": {"CPU": "test"},
    "load_start": "1.00",
    "load_end": "2.00",
}


def result(avg: dict[str, list[float]]) -> rounds.Rounds:
    def measure(path: str, n: int) -> rounds.Measurement:
        figures = {"avg_ms": avg[path][n - 1], "p50_ms": 1, "p99_ms": 2, "max_ms": 3}
        return rounds.Measurement({**figures, "rps": 80, "errors": 0})

    return rounds.run(list(PATHS), measure, 3, log=lambda _: None)


def test_each_path_has_its_median_and_range() -> None:
    text = markdown(
        result({"local": [2, 3, 4], "service": [5, 6, 9], "port-forward": [8, 8, 8]}), META
    )
    avg = {row[0]: row[1] for row in markdown_rows(text)}
    assert avg["service"] == "6.00 [5.00-9.00]"
    assert avg["port-forward"] == "8.00 [8.00-8.00]"
    assert "service / local: x2.25 (x2.00-x2.50, 3 rounds); local better in every round" in text


def test_a_ratio_that_crosses_one_gives_no_verdict() -> None:
    text = markdown(
        result({"local": [2, 3, 4], "service": [1, 6, 2], "port-forward": [2, 3, 4]}), META
    )
    assert f"service / local: x0.50 (x0.50-x2.00, 3 rounds); {rounds.NO_VERDICT}" in text
