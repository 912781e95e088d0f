"""Disjoint CPUs for the load generator and the server under test (Linux CPU affinity).

On a 2-core machine the generator (this process: Locust runs in it) gets CPU 0 and the server
CPU 1, so that neither takes the other's core; other jobs on the machine can still run on
both, which the load average recorded beside the figures shows.

    pin = pinning.parse("auto", os.sched_getaffinity(0))   # or "off", or "0/1-3"
    with pinning.pinned(pin.generator):                    # every thread of this process
        process.start_background(repo, prefix=pinning.exec_prefix(pin.server))

Affinity is per thread: `pinned` sets it on every thread of this process (threads started
later inherit it), and the server is started through `exec_prefix`, which sets it before the
server's interpreter starts, so its worker processes and threads inherit it too. Free of Locust.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

# Sets the affinity, then becomes the command (same pid: the caller's Popen still owns it).
_EXEC = (
    "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@dataclass(frozen=True)
class Pinning:
    generator: tuple[int, ...]
    server: tuple[int, ...]

    def describe(self) -> str:
        return (
            f"load generator on CPU {cpulist(self.generator)}, server under test on CPU"
            f" {cpulist(self.server)}"
        )

    def to_json(self) -> dict[str, list[int]]:
        return {"generator": list(self.generator), "server": list(self.server)}


def plan(available: Iterable[int]) -> Pinning | None:
    """The generator on the lowest available CPU, the server on the others; None with fewer
    than 2 CPUs (nothing disjoint to give)."""
    cpus = sorted(set(available))
    if len(cpus) < 2:
        return None
    return Pinning((cpus[0],), tuple(cpus[1:]))


def parse_cpus(text: str) -> tuple[int, ...]:
    """`1-3,5` -> (1, 2, 3, 5), as taskset and /sys write CPU lists."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"CPU list {text!r}: expected numbers and ranges like 1-3,5")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"CPU list {text!r}: range {part} runs backwards")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def cpulist(cpus: Iterable[int]) -> str:
    """(1, 2, 3, 5) -> `1-3,5`."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def parse(spec: str, available: Iterable[int]) -> Pinning | None:
    """`auto` (plan over the available CPUs), `off` (None), or `GENERATOR/SERVER` CPU lists
    such as `0/1` or `0/1-3`: disjoint, and within the available CPUs."""
    allowed = set(available)
    if spec == "auto":
        return plan(allowed)
    if spec == "off":
        return None
    gen_text, sep, server_text = spec.partition("/")
    if not sep:
        raise ValueError(f"--pin {spec!r}: expected auto, off or GENERATOR/SERVER CPUs (0/1)")
    gen, server = parse_cpus(gen_text), parse_cpus(server_text)
    if set(gen) & set(server):
        raise ValueError(f"--pin {spec!r}: CPU {cpulist(set(gen) & set(server))} in both")
    outside = (set(gen) | set(server)) - allowed
    if outside:
        raise ValueError(
            f"--pin {spec!r}: CPU {cpulist(outside)} not available (this process may use"
            f" {cpulist(allowed)})"
        )
    return Pinning(gen, server)


def exec_prefix(cpus: Iterable[int]) -> list[str]:
    """A command prefix that runs the command on `cpus` (as `taskset -c` would)."""
    return [sys.executable, "-c", _EXEC, ",".join(str(c) for c in sorted(set(cpus)))]


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def tree_affinity(pid: int) -> tuple[int, ...]:
    """The CPUs any thread of the process or its descendants may run on."""
    cpus: set[int] = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return ()
    for proc in procs:
        for tid in _threads(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                cpus.update(os.sched_getaffinity(tid))
    return tuple(sorted(cpus))


@contextlib.contextmanager
def pinned(cpus: Iterable[int]) -> Iterator[None]:
    """Every thread of this process on `cpus` while inside; each thread's affinity restored
    after (threads started inside get the process's affinity from before)."""
    target = set(cpus)
    before = {tid: os.sched_getaffinity(tid) for tid in _threads(os.getpid())}
    default = os.sched_getaffinity(0)
    for tid in before:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, target)
    try:
        yield
    finally:
        for tid in _threads(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, before.get(tid, default))


def available() -> set[int]:
    """The CPUs this process may use (a cgroup cpuset or taskset may narrow the machine's)."""
    return set(os.sched_getaffinity(0))


def online() -> int:
    """CPUs online on the machine (/sys), for the report beside the ones used."""
    path = Path("/sys/devices/system/cpu/online")
    return len(parse_cpus(path.read_text().strip())) if path.is_file() else os.cpu_count() or 1
