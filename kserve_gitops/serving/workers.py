"""KServe's --workers > 1 supervisor, with a start-up grace for the workers it spawns.

KServe 0.20's RESTServerMultiProcess asks each spawned worker for a pong every 0.5 s, with a
5 s timeout, from the moment it spawns it. A worker answers only once it has re-imported KServe,
scikit-learn and the model server, which on a busy node (or a pod with a small CPU limit) takes
longer than 5 s: the parent kills it as hung, spawns a replacement, kills that too, and the
server never becomes ready. A worker that has not yet answered its first ping is alive while
its process runs, for STARTUP_GRACE seconds; after the first pong KServe's own check applies.
"""

from __future__ import annotations

import time

from kserve.protocol.rest.multiprocess import server as multiprocess

STARTUP_GRACE = 120.0


class PatientWorker(multiprocess.RESTServerProcess):
    def start(self) -> None:
        self._started = time.monotonic()
        self._pinged = False
        self._answered = False
        super().start()

    def is_alive(self, timeout: float = 5) -> bool:
        if self._answered:
            return super().is_alive(timeout)
        if not self._process.is_alive():
            return False
        if not self._pinged:  # one ping, answered once the worker's pong thread runs
            self._parent_conn.send(b"ping")
            self._pinged = True
        if self._parent_conn.poll(0):
            self._parent_conn.recv()
            self._answered = True
            return True
        return time.monotonic() - self._started < STARTUP_GRACE


def install() -> None:
    """Make KServe's supervisor start (and restart) PatientWorker; it looks the class up by
    module name each time it spawns one."""
    multiprocess.RESTServerProcess = PatientWorker  # type: ignore[misc]
