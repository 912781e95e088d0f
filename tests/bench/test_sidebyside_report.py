"""The runtimes side by side's BENCHMARKS.md section (bench.sidebyside_report) from made-up
rounds: medians with their range, ratios per round, the verdict refused when the rounds
disagree, the pinning and a busy start reported."""

from __future__ import annotations

from typing import Any

from kserve_gitops.bench import rounds, sidebyside_report
from kserve_gitops.bench.rounds import NO_VERDICT
from tests import markdown_rows

CONFIGS = {
    "sklearnserver-tuned": ("sklearnserver", ("v1", "v2")),
    "mlserver-inprocess": ("mlserver", ("v2",)),
}


def _point(config: str, proto: str, number: int, avg: float, rate: float) -> dict[str, Any]:
    return {
        "config": config,
        "runtime": CONFIGS[config][0],
        "protocol": proto,
        "round": number,
        "cold_start_s": 1.0 + number / 10,
        "rss_mib": [200.0],
        "fixed": {
            "latency_ms": {"avg": avg, "p50": avg, "p95": avg, "p99": 2 * avg, "max": 3 * avg},
            "server_cpu_ms_per_request": 0.5,
            "errors": 0,
        },
        "max": {"rate": rate, "server_cpu_ms_per_request": 0.4} if rate else None,
        "steps": [],
        "cpus": {"generator": [0], "server": [1]},
    }


def _results(figures: dict[str, list[tuple[float, float]]], **extra: Any) -> dict[str, Any]:
    """figures[config][round - 1] = (avg ms, max rate), the same on every protocol."""

    def measure(config: str, number: int) -> rounds.Measurement:
        avg, rate = figures[config][number - 1]
        points = [_point(config, p, number, avg, rate) for p in CONFIGS[config][1]]
        return rounds.Measurement(sidebyside_report.metrics_of(points), points)

    n = len(next(iter(figures.values())))
    done = rounds.run(
        list(figures), measure, n, log=lambda _l: None, loadavg=lambda: (0.4, 0.3, 0.2)
    )
    return {
        "date": "2026-12-07 12:00 UTC",
        "knobs": {"fixed_s": 10, "step_s": 5, "p99_ms": 50, "start_rate": 50},
        "rounds": n,
        "configs": [
            {"name": name, "runtime": runtime, "args": [], "note": name}
            for name, (runtime, _) in CONFIGS.items()
        ],
        "versions": {"kserve": "0.20.0", "mlserver": "1.5.0"},
        "pinning": {"generator": [0], "server": [1]},
        "pinning_note": "",
        "cpus_online": 2,
        "points": [p for r in done.records for p in r.detail],
        "order": done.order,
        "rounds_run": done.to_json(detail=False),
        "load_average_start": done.load_average_start,
        "load_average_end": done.load_average_end,
        "pinning_observed": {"generator": "0", "server": "1"},
        **extra,
    }


def _text(results: dict[str, Any]) -> str:
    return "\n".join(sidebyside_report.markdown(results))


def _figures(text: str, config: str) -> list[str]:
    """The row of `config` in the first protocol's table (not the one of the settings)."""
    return next(r for r in markdown_rows(text) if r[0] == config and len(r) > 2)


def test_consistent_rounds_give_a_verdict_with_medians_and_ranges():
    text = _text(
        _results(
            {
                "sklearnserver-tuned": [(1.0, 2000), (1.2, 2400), (0.9, 1800), (1.1, 2200), (1, 0)],
                "mlserver-inprocess": [(1.5, 1000), (1.6, 1200), (1.4, 900), (1.5, 1100), (2, 0)],
            }
        )
    )
    # Rate 0 in round 5 (first step failed) for both: the ratio of that round is 1.0, which
    # crosses 1.0, so the rate has no verdict; latency is better in all five rounds.
    tuned = _figures(text, "sklearnserver-tuned")
    assert tuned[1] == "1.00 (0.90-1.20)"
    assert tuned[6:8] == ["2000 (0-2400)", "2000 / 2400 / 1800 / 2200 / <50"]
    assert "- Latency, V2: **sklearnserver-tuned**, avg 1.00 (0.90-1.20) ms" in text
    assert f"- Throughput, V2: {NO_VERDICT} (sklearnserver-tuned by median)" in text
    assert f"V2 max rate x2.00 (x1.00-x2.00, 5 rounds) ({NO_VERDICT})" in text
    assert "V2 avg x0.67 (x0.50-x0.75, 5 rounds) (sklearnserver-tuned better in every" in text
    assert f": {NO_VERDICT} on at least one figure." in text
    assert "CPU pinning: the load generator (this process, Locust in it) on CPU 0" in text
    assert "server under test (all its processes) on CPU 1, of 2 online" in text
    assert "Observed: the generator's threads on CPU 0, every thread" in text
    assert "load average at each round's start 0.40 / 0.40 / 0.40 / 0.40 / 0.40" in text
    assert "Flagged" not in text


def test_goal_met_in_every_round_and_not_met():
    ours_wins = {
        "sklearnserver-tuned": [(1.0, 2000), (1.2, 2400), (0.9, 1800), (1.1, 2200), (1.0, 2100)],
        "mlserver-inprocess": [(1.5, 1000), (1.6, 1200), (1.4, 900), (1.5, 1100), (1.5, 1000)],
    }
    text = _text(_results(ours_wins))
    assert ": met in every round." in text
    assert "- Throughput, V2: **sklearnserver-tuned**, 2100 (1800-2400) req/s" in text
    ours, theirs = ours_wins.values()
    theirs_win = {"sklearnserver-tuned": theirs, "mlserver-inprocess": ours}
    assert "NOT met" in _text(_results(theirs_win))


def test_rounds_that_disagree_refuse_the_verdict_even_when_the_medians_differ():
    # Issue 26: a 2-round run reversed the verdict (x0.75 against x1.49). Medians 1.2 vs 1.0
    # would call mlserver faster; the rounds do not agree, so nothing is called.
    text = _text(
        _results(
            {
                "sklearnserver-tuned": [(1.0, 750), (1.49, 1490), (1.2, 1000)],
                "mlserver-inprocess": [(1.33, 1000), (1.0, 1000), (1.0, 1000)],
            }
        )
    )
    assert f"- Latency, V2: {NO_VERDICT} (mlserver-inprocess by median)" in text
    assert "x0.75-x1.49" in text
    assert "met in every round" not in text and "NOT met" not in text


def test_busy_start_is_flagged_and_missing_pinning_is_said():
    quiet = {
        "threshold": 1.0,
        "timeout_s": 600,
        "waited_s": 600.0,
        "load_average": [6.5, 5.0, 4.0],
        "quiet": False,
    }
    results = _results(
        {"sklearnserver-tuned": [(1.0, 100)], "mlserver-inprocess": [(1.0, 100)]},
        quiet=quiet,
        pinning=None,
        pinning_note="only CPU 0 available to this process",
    )
    text = _text(results)
    assert "**Flagged: started on a busy machine.** The 1-minute load average was 6.50" in text
    assert "after waiting 600 s" in text and "smoke run" in text
    assert "CPU pinning: none (only CPU 0 available to this process)" in text


def test_results_from_before_the_rounds_runner_still_render():
    results = _results({"sklearnserver-tuned": [(1.0, 100)], "mlserver-inprocess": [(2.0, 50)]})
    for key in ("rounds_run", "pinning", "pinning_note", "pinning_observed", "cpus_online"):
        del results[key]
    text = _text(results)
    assert "CPU pinning: none (a run from before pinning existed)" in text
    assert _figures(text, "sklearnserver-tuned")[1] == "1.00"
    assert "each round's start" not in text  # no load average per round was recorded
