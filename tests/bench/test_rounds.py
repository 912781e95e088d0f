"""The rounds runner and its statistics (bench.rounds), the quiet-machine wait
(base.machine.wait_for_quiet): no server, no load, no clock but the ones the tests give."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from kserve_gitops.base import machine
from kserve_gitops.bench import rounds
from kserve_gitops.bench.rounds import NO_VERDICT, Measurement, Rounds, interleave, spread


def test_interleave_rotates_so_every_config_runs_in_every_position():
    order = interleave(["a", "b", "c"], 5)
    assert order == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
        ["b", "c", "a"],
    ]
    # Over len(configs) rounds, each configuration takes each position once.
    for position in range(3):
        assert sorted(r[position] for r in order[:3]) == ["a", "b", "c"]
    assert all(sorted(r) == ["a", "b", "c"] for r in order)  # each round runs all of them
    assert interleave([], 3) == []
    with pytest.raises(ValueError, match="rounds"):
        interleave(["a"], 0)


def test_spread_median_range_and_quartiles():
    s = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.low, s.high) == (5, 3.0, 1.0, 5.0)
    assert (s.q1, s.q3, s.iqr) == (2.0, 4.0, 2.0)
    assert s.text() == "3.00 (1.00-5.00)"
    assert s.text(".0f") == "3 (1-5)"
    one = spread([7.0])
    assert (one.median, one.low, one.high, one.q1, one.q3) == (7.0, 7.0, 7.0, 7.0, 7.0)
    assert one.text() == "7.00"  # no range to show
    assert spread([2.0, 4.0]).median == 3.0
    assert spread([202.1, 202.3]).text(".0f") == "202"  # equal at the precision shown
    with pytest.raises(ValueError):
        spread([])


def test_crossing_one():
    assert spread([0.9, 1.1]).crosses(1.0)
    assert spread([1.0, 1.2]).crosses(1.0)  # a round with no difference is not a win
    assert not spread([1.01, 1.2]).crosses(1.0)
    assert not spread([0.5, 0.99]).crosses(1.0)


def test_ratio_of_handles_zero():
    assert rounds.ratio_of(3.0, 2.0) == 1.5
    assert rounds.ratio_of(3.0, 0.0) == math.inf
    assert rounds.ratio_of(0.0, 0.0) == 1.0


def test_verdict_refused_when_rounds_disagree():
    def ratio(*values: float) -> rounds.Ratio:
        return rounds.Ratio("ours", "theirs", "v2.max_rate", values)

    # Higher is better (a rate): ours wins only if every round's ratio is above 1.
    assert ratio(1.2, 1.1, 1.5).verdict(higher_is_better=True) == "ours better in every round"
    assert ratio(0.8, 0.9).verdict(higher_is_better=True) == "theirs better in every round"
    assert ratio(0.75, 1.49).verdict(higher_is_better=True) == NO_VERDICT  # issue 26's reversal
    # Lower is better (a latency): the same ratios give the other side.
    assert ratio(0.8, 0.9).verdict(higher_is_better=False) == "ours better in every round"
    assert ratio(1.2, 1.1).verdict(higher_is_better=False) == "theirs better in every round"
    assert ratio(0.9, 1.0).verdict(higher_is_better=False) == NO_VERDICT
    assert ratio().verdict(higher_is_better=True) == NO_VERDICT  # no common round
    assert ratio(0.91, 0.85, 0.97).text() == "x0.91 (x0.85-x0.97, 3 rounds)"
    assert ratio(1.0).text() == "x1.00 (1 round)"


def _fake_run(figures: dict[str, list[float]], n: int = 5) -> tuple[Rounds, list[tuple[str, int]]]:
    """The runner over a fake measure: configuration c's figure in round r is figures[c][r-1]."""
    calls: list[tuple[str, int]] = []
    loads = itertools.count(1.0)  # every read of the load average a new value
    ticks = itertools.count(100.0, 10.0)

    def measure(config: str, number: int) -> Measurement:
        calls.append((config, number))
        return Measurement({"rate": figures[config][number - 1]}, {"seen": [config, number]})

    result = rounds.run(
        list(figures),
        measure,
        n,
        log=lambda _line: None,
        loadavg=lambda: (next(loads), 0.5, 0.25),
        clock=lambda: next(ticks),
    )
    return result, calls


def test_runner_measures_in_interleaved_order_and_keeps_load_per_measurement():
    figures = {"a": [10, 20, 30, 40, 50], "b": [5, 5, 5, 5, 5], "c": [1, 2, 3, 4, 5]}
    result, calls = _fake_run(figures)
    expected = [(c, n + 1) for n, order in enumerate(interleave(["a", "b", "c"], 5)) for c in order]
    assert calls == expected
    assert result.order == interleave(["a", "b", "c"], 5)
    assert [r.config for r in result.records] == [c for c, _ in expected]
    # Load average: one read at the start, one per round's log line, one per measurement.
    assert result.load_average_start == [1.0, 0.5, 0.25]
    first_of_round_1 = result.records[0]
    assert first_of_round_1.load_average == [3.0, 0.5, 0.25]
    assert result.round_loads() == [3.0, 7.0, 11.0, 15.0, 19.0]
    assert result.load_average_end[0] == 22.0
    assert all(r.seconds == 10.0 for r in result.records)  # clock read before and after
    assert result.values("a", "rate") == [10, 20, 30, 40, 50]  # in round order
    assert result.spread("a", "rate") == spread([10, 20, 30, 40, 50])
    assert result.spread("a", "missing") is None
    assert result.records[0].detail == {"seen": ["a", 1]}


def test_runner_ratio_is_taken_within_each_round():
    figures = {"ours": [100, 200, 300, 400, 500], "theirs": [90, 210, 250, 390, 450]}
    result, _ = _fake_run(figures)
    ratio = result.ratio("ours", "theirs", "rate")
    assert ratio.per_round == pytest.approx((100 / 90, 200 / 210, 300 / 250, 400 / 390, 500 / 450))
    # The medians alone (300 vs 250) would say ours is faster; round 2 says otherwise.
    assert result.spread("ours", "rate").median > result.spread("theirs", "rate").median
    assert ratio.verdict(higher_is_better=True) == NO_VERDICT
    steady = {"ours": [100, 200, 300, 400, 500], "theirs": [90, 190, 250, 390, 450]}
    assert _fake_run(steady)[0].ratio("ours", "theirs", "rate").verdict(True) == (
        "ours better in every round"
    )


def test_runner_ratio_across_metrics_and_missing_rounds():
    run = Rounds(
        order=[["a", "b"], ["b", "a"]],
        records=[
            rounds.Record(1, "a", [0.1], 0, 1, {"v1.avg_ms": 2.0}),
            rounds.Record(1, "b", [0.1], 0, 1, {"v2.avg_ms": 4.0}),
            rounds.Record(2, "b", [0.1], 0, 1, {"v2.avg_ms": 1.0}),
            rounds.Record(2, "a", [0.1], 0, 1, {}),  # no figure in round 2: left out
        ],
    )
    assert run.ratio("a", "b", "v1.avg_ms", "v2.avg_ms").per_round == (0.5,)


def test_runner_refuses_duplicate_names_and_round_trips_json():
    with pytest.raises(ValueError, match="unique"):
        rounds.run(["x", "x"], lambda c, n: Measurement({}), 1, log=lambda _l: None)
    result, _ = _fake_run({"a": [1, 2], "b": [3, 4]}, n=2)
    doc = json.loads(json.dumps(result.to_json()))
    assert Rounds.from_json(doc) == result
    bare = result.to_json(detail=False)
    assert all(r["detail"] is None for r in bare["records"])


def test_wait_for_quiet_stops_when_quiet_or_when_time_is_up():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    # Quiet after two polls.
    loads = iter([3.0, 2.0, 0.5, 0.5])
    found = machine.wait_for_quiet(
        600,
        1.0,
        loadavg=lambda: (next(loads), 1.0, 1.0),
        clock=lambda: now[0],
        sleep=sleep,
        log=lambda _l: None,
    )
    assert found["quiet"] and found["load_average"][0] == 0.5 and found["waited_s"] == 30
    assert slept == [15, 15]
    # Never quiet: gives up at the timeout (the last sleep cut to what is left) and flags it.
    now[0], slept[:] = 0.0, []
    lines: list[str] = []
    busy = machine.wait_for_quiet(
        40,
        1.0,
        loadavg=lambda: (4.0, 4.0, 4.0),
        clock=lambda: now[0],
        sleep=sleep,
        log=lines.append,
    )
    assert not busy["quiet"] and busy["waited_s"] == 40 and slept == [15, 15, 10]
    assert busy["threshold"] == 1.0 and busy["timeout_s"] == 40
    assert "BUSY" in lines[-1]
    # No wait asked for: one reading, still flagged.
    now[0] = 0.0
    at_once = machine.wait_for_quiet(
        0,
        1.0,
        loadavg=lambda: (2.0, 1.0, 1.0),
        clock=lambda: now[0],
        sleep=sleep,
        log=lambda _l: None,
    )
    assert not at_once["quiet"] and at_once["waited_s"] == 0
