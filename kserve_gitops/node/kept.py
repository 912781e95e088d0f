"""A real node kept running (KEEP=1) once the run that started it is gone: the marker that keeps
the next node off the machine, the machine's state it saved, and its stop from its folders
alone; and the kill of left-over processes by what their command lines name, which
RealNode.stop (kserve_gitops.node.realnode) uses for containerd's shims too."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from kserve_gitops.node import host
from kserve_gitops.node.config import Layout

# A node left running (KEEP=1) holds no process, so it says so here until `kgops cluster stop`.
KEPT = Path("/run/kgops-real-node.kept")
HOST_STATE = "host-state.json"  # the machine before the node started, for a kept cluster's stop


def kill_naming(needle: bytes) -> list[str]:
    """SIGKILL every process whose command line names `needle` (containerd's shims outlive it
    by design; ours name our socket)."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), 9)
                killed.append(f"killed left-over process {proc.name}")
    return killed


def stop_kept(layout: Layout) -> list[str]:
    """A node left running (KEEP=1) stopped from its folders alone: every process naming them
    killed, mounts, cgroups and the machine's settings restored as `RealNode.stop` does."""
    if not layout.dir.is_dir():
        return []
    undone = kill_naming(str(layout.dir).encode()) + kill_naming(str(layout.run).encode())
    time.sleep(1)
    mounts = host.unmount_under(layout.kubelet_root, layout.run, layout.dir)
    undone += [f"unmounted {len(mounts)} mount(s)"] if mounts else []
    undone += host.kill_cgroup(layout.cgroup)
    undone += [f"cgroup left: {line}" for line in host.remove_cgroup(layout.cgroup)]
    if (layout.dir / HOST_STATE).is_file():
        undone += host.HostState.load(layout.dir / HOST_STATE).restore()
    shutil.rmtree(layout.run, ignore_errors=True)
    if KEPT.is_file() and str(layout.dir) in KEPT.read_text():
        KEPT.unlink()
    return undone
