"""PatientWorker: a spawned worker slower to start than KServe's 5 s ping is not killed as hung."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from kserve_gitops.serving import workers


class _Process:
    """Stands in for the spawned OS process: only whether it still runs matters here."""

    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> workers.PatientWorker:
    w = workers.PatientWorker.__new__(workers.PatientWorker)
    w._parent_conn, w._child_conn = mp.Pipe()
    w._process = _Process()  # type: ignore[assignment]
    monkeypatch.setattr(workers.multiprocess.RESTServerProcess, "start", lambda self: None)
    w.start()
    return w


def test_a_worker_still_importing_is_alive_within_the_grace(worker):
    worker._started -= 30
    assert worker.is_alive() and worker.is_alive()
    # One ping, not one per check: the worker answers the queue once its pong thread runs.
    assert worker._child_conn.recv() == b"ping" and not worker._child_conn.poll(0)


def test_a_worker_that_never_answers_is_hung_after_the_grace(worker):
    worker._started -= workers.STARTUP_GRACE + 1
    assert not worker.is_alive()


def test_a_dead_worker_is_dead_at_once(worker):
    worker._process.alive = False
    assert not worker.is_alive()


def test_after_its_first_pong_kserves_own_ping_applies(worker):
    assert worker.is_alive()
    worker._child_conn.recv()
    worker._child_conn.send(b"pong")
    assert worker.is_alive() and worker._answered
    # From now on each check pings and waits for the answer, as KServe does.
    assert not worker.is_alive(timeout=0.1)


def test_install_makes_kserves_supervisor_spawn_patient_workers(monkeypatch):
    monkeypatch.setattr(
        workers.multiprocess, "RESTServerProcess", workers.multiprocess.RESTServerProcess
    )
    workers.install()
    assert workers.multiprocess.RESTServerProcess is workers.PatientWorker
