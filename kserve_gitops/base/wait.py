"""The one polling loop of the package: ask a check until it answers, or fail naming what was
awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    timeout_s: float,
    interval_s: float,
    what: str | Callable[[], str],
    error: Callable[[str], Exception] = TimeoutError,
) -> T:
    """`check`'s first truthy answer, asked every `interval_s` seconds (at least once). After
    `timeout_s`: `error` saying "timed out after <timeout_s>s waiting for <what>", where a
    callable `what` is called then, to say the last state seen. An exception `check` raises
    ends the wait (waiting is pointless: a process exited, a request was refused)."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() >= deadline:
            awaited = what() if callable(what) else what
            raise error(f"timed out after {timeout_s:g}s waiting for {awaited}")
        # time.sleep is looked up here, not imported: under Locust it is gevent's (monkey-patched).
        time.sleep(interval_s)
    return found
