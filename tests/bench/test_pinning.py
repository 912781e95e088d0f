"""CPU pinning of the load generator and the server under test (bench.pinning): the decision
from a set of CPUs, the spec parsing, and that the affinity really reaches a child's threads
and this process's threads (read back from the kernel, not timed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kserve_gitops.bench import pinning
from kserve_gitops.bench.pinning import Pinning


def test_plan_gives_the_generator_the_lowest_cpu_and_the_server_the_rest():
    assert pinning.plan({0, 1}) == Pinning((0,), (1,))  # this machine: 2 cores
    assert pinning.plan([3, 1, 2, 0]) == Pinning((0,), (1, 2, 3))
    assert pinning.plan({2, 5}) == Pinning((2,), (5,))  # a cpuset narrowing the machine
    assert pinning.plan({0}) is None  # nothing disjoint to give
    assert pinning.plan([]) is None
    assert Pinning((0,), (1,)).describe() == ("load generator on CPU 0, server under test on CPU 1")
    assert Pinning((0,), (1, 2, 3, 5)).to_json() == {"generator": [0], "server": [1, 2, 3, 5]}


def test_cpu_lists():
    assert pinning.parse_cpus("1-3,5") == (1, 2, 3, 5)
    assert pinning.parse_cpus("0") == (0,)
    assert pinning.cpulist([5, 1, 3, 2]) == "1-3,5"
    assert pinning.cpulist([0, 2]) == "0,2"
    for bad in ("", "a", "3-1", "1-"):
        with pytest.raises(ValueError):
            pinning.parse_cpus(bad)


def test_parse_spec():
    assert pinning.parse("auto", {0, 1}) == Pinning((0,), (1,))
    assert pinning.parse("auto", {0}) is None
    assert pinning.parse("off", {0, 1}) is None
    assert pinning.parse("1/0", {0, 1}) == Pinning((1,), (0,))
    assert pinning.parse("0/1-3", range(4)) == Pinning((0,), (1, 2, 3))
    with pytest.raises(ValueError, match="in both"):
        pinning.parse("0-1/1", {0, 1})
    with pytest.raises(ValueError, match="not available"):
        pinning.parse("0/2", {0, 1})
    with pytest.raises(ValueError, match="GENERATOR/SERVER"):
        pinning.parse("0,1", {0, 1})


needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


@needs_two
def test_exec_prefix_pins_the_command_and_its_children_keeping_the_pid():
    cpu = max(os.sched_getaffinity(0))
    # The child starts a grandchild and a thread; all must be on `cpu`, in the same pid.
    code = (
        "import os, subprocess, sys, threading\n"
        "t = threading.Thread(target=lambda: print(sorted(os.sched_getaffinity(0))))\n"
        "t.start(); t.join()\n"
        "print(os.getpid())\n"
        "print(subprocess.run(['taskset', '-pc', str(os.getpid())], capture_output=True,"
        " text=True).stdout.split(':')[-1].strip())\n"
    )
    proc = subprocess.Popen(
        [*pinning.exec_prefix([cpu]), sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=120)
    thread_cpus, pid, taskset = out.splitlines()
    assert thread_cpus == f"[{cpu}]"
    assert int(pid) == proc.pid  # exec, not a child: Popen still owns the server
    assert taskset == str(cpu)


@needs_two
def test_pinned_holds_every_thread_of_this_process_and_restores_it():
    import threading

    before = os.sched_getaffinity(0)
    target = {min(before)}
    ready, release = threading.Event(), threading.Event()
    tid: list[int] = []

    def idle() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        release.wait(60)

    thread = threading.Thread(target=idle)
    thread.start()
    ready.wait(60)
    try:
        with pinning.pinned(target):
            assert os.sched_getaffinity(0) == target
            assert os.sched_getaffinity(tid[0]) == target  # a thread started before
            # tree_affinity reads every thread back from the kernel; under pytest-xdist the
            # runner's own I/O thread may be created meanwhile, so the test's threads are
            # what must hold the target.
            assert set(target) <= set(pinning.tree_affinity(os.getpid()))
        assert os.sched_getaffinity(0) == before
        assert os.sched_getaffinity(tid[0]) == before
    finally:
        release.set()
        thread.join(60)
