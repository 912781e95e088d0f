"""The open-loop arrival schedule: a fixed rate, and a linear ramp whose slots are the integral
of its rate."""

from __future__ import annotations

import pytest

from kserve_gitops.base.arrivals import Arrivals


def test_a_fixed_rate_is_one_slot_every_interval() -> None:
    a = Arrivals(20)
    assert [a.due(i) for i in range(4)] == [0, 0.05, 0.1, 0.15]
    assert (a.due_by(-0.1), a.due_by(0), a.due_by(0.1), a.planned(30)) == (0, 1, 3, 600)
    assert Arrivals.of(20) == a and Arrivals.of(a) is a and a.peak == a.rate_at(99) == 20


def test_a_ramp_offers_the_integral_of_its_rate() -> None:
    ramp = Arrivals(10, 110, 100)
    due = [ramp.due(i) for i in range(7000)]
    assert due == sorted(due) and due[0] == 0
    assert sum(d < 100 for d in due) == ramp.planned(100) == (10 + 110) / 2 * 100
    first, last = sum(d < 1 for d in due), sum(99 <= d < 100 for d in due)
    assert (first, last) == (pytest.approx(10, abs=1), pytest.approx(109, abs=1))
    # Past the ramp the end rate holds.
    assert ramp.due(6000 + 110) == pytest.approx(101) and ramp.rate_at(150) == 110
    assert ramp.peak == 110 and ramp.rate_at(50) == 60


@pytest.mark.parametrize("arrivals", [Arrivals(10, 110, 100), Arrivals(300, 20, 7), Arrivals(33)])
def test_slots_due_by_a_time_agree_with_each_slots_due_time(arrivals: Arrivals) -> None:
    for i in range(0, 2000, 7):
        assert arrivals.due_by(arrivals.due(i)) == i + 1
        assert arrivals.due_by(arrivals.due(i) - 1e-6) == i


def test_the_wire_form_round_trips_and_describes_itself() -> None:
    for a in (Arrivals(80), Arrivals(10, 400, 120)):
        assert Arrivals.from_wire(a.wire()) == a
    assert Arrivals(80).describe() == "80 req/s"
    assert Arrivals(10, 400, 120).describe() == "10 -> 400 req/s over 120s"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "rate 0 req/s: expected a positive rate"),
        ((10, 0, 5), "expected a positive end rate and a positive length"),
        ((10, 20, 0), "expected a positive end rate and a positive length"),
    ],
)
def test_a_schedule_that_cannot_be_offered_is_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Arrivals(*args)
