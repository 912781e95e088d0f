"""The reliability scenarios' open-loop traffic against a real local server, and its table."""

from __future__ import annotations

import time

import pytest

from kserve_gitops.e2e import traffic
from tests.load_helpers import fast_server, free_port

ROW = ((5.1, 3.5, 1.4, 0.2),)


def _run(url: str, seconds: float, rate: float = 40.0) -> list[traffic.Outcome]:
    load = traffic.OpenLoop(url, "sklearn-iris", ROW, rate, timeout_s=10)
    load.start()
    while load.now() < seconds:
        time.sleep(0.05)
    return load.stop()


def test_every_request_is_due_on_schedule_and_answered() -> None:
    with fast_server() as url:
        outcomes = _run(url, 1.0)
    assert len(outcomes) >= 2
    # Request i is due at i/rate however long the server takes: the open-loop schedule.
    assert [o.due_s for o in outcomes] == pytest.approx([i / 40.0 for i in range(len(outcomes))])
    counts = traffic.counts(outcomes, {(0,)})
    assert (counts.sent, counts.answered) == (len(outcomes), len(outcomes))
    assert (counts.failed, counts.wrong) == (0, 0)
    assert counts.first_answer_s is not None and counts.max_latency_s is not None
    # Another expectation turns every answer into a wrong one.
    assert traffic.counts(outcomes, {(1,)}).wrong == len(outcomes)


def test_a_refusing_server_fails_every_request_without_retry() -> None:
    outcomes = _run(f"http://127.0.0.1:{free_port()}", 0.5)
    counts = traffic.counts(outcomes, {(0,)})
    assert counts.sent == counts.failed == len(outcomes) > 0
    assert counts.first_answer_s is None
    assert all(o.status is None and o.error.startswith("ConnectError") for o in outcomes)


def test_over_time_buckets_requests_and_places_events_after_the_last_request() -> None:
    ok = traffic.Outcome(0.5, 0.002, 200, (0,))
    refused = traffic.Outcome(6.0, None, None, None, "ConnectError: refused")
    slow = traffic.Outcome(7.0, 0.5, 200, (0,))
    events = [(5.5, "killed"), (27.0, "scaled to zero")]
    text = traffic.over_time([ok, refused, slow], events)
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "due"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert rows[0][:4] == ["0-5s", "1", "1", "0"]
    assert rows[1][:4] == ["5-10s", "2", "1", "1"]
    assert rows[1][6] == "500.0" and "5.5s killed" in rows[1][7]
    assert "failed: ConnectError" in rows[1][7]
    assert rows[2][0] == "10-25s" and rows[2][1] == "0"  # a quiet stretch is one row
    assert rows[3][0] == "25-30s" and "27.0s scaled to zero" in rows[3][7]


def test_recovery_is_the_answer_to_the_first_request_after_the_last_failure() -> None:
    before = traffic.Outcome(9.0, 0.005, 200, (0,))
    failed = [traffic.Outcome(10.0 + i / 20, None, 502, None, "bad gateway") for i in range(3)]
    held = traffic.Outcome(10.15, 7.85, 200, (0,))  # held by the activator until 18.0 s
    after = traffic.Outcome(18.5, 0.005, 200, (0,))
    outcomes = [before, *failed, held, after]
    assert traffic.recovery_s(outcomes, since=10.0) == pytest.approx(8.0)
    # Nothing failed: the first request due after the change, held or not.
    assert traffic.recovery_s([before, held, after], since=10.0) == pytest.approx(8.0)
    assert traffic.recovery_s([before, *failed], since=10.0) is None
