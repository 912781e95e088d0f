"""base.wait.wait_until: the first truthy answer, the caller's error naming what was awaited
and the last state, and a check's own exception ending the wait."""

from __future__ import annotations

import pytest

from kserve_gitops.base.wait import wait_until


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([None, "", "pod-a"])
    assert wait_until(lambda: next(answers), 5, 0, "a pod") == "pod-a"


def test_timeout_names_what_and_the_last_state_in_the_callers_error() -> None:
    seen = []

    def check() -> bool:
        seen.append("Pending")
        return False

    class Refused(Exception):
        pass

    with pytest.raises(Refused, match=r"timed out after 0.05s waiting for a pod \(Pending\)"):
        wait_until(check, 0.05, 0.01, lambda: f"a pod ({seen[-1]})", Refused)
    assert len(seen) > 1  # asked again until the timeout


def test_an_exception_of_the_check_ends_the_wait() -> None:
    calls = []

    def exited() -> bool:
        calls.append(1)
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="the server exited"):
        wait_until(exited, 5, 0, "the server")
    assert calls == [1]
