"""What a real node changes on the machine, recorded before it starts and undone after it stops:
kernel settings (the kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops;
the bridge plugin turns on IPv4 forwarding), iptables rules (the kubelet's KUBE-FIREWALL and
canaries, kube-proxy's Service chains, the CNI plugins' masquerade and port-map chains, the
NetworkPolicy engine's firewall chains), the ipsets the engine's rules match on, the links,
mounts and cgroups under the node's own names and folders.

`HostState.capture()` before the node starts; `restore()` after every process of it ended,
returning what it undid, so the run can say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kserve_gitops.base.wait import wait_until

SYSCTL_ROOT = Path("/proc/sys")
# Trees of /proc/sys a node may write; counters and per-boot values elsewhere are not settings.
SYSCTL_TREES = ("vm", "kernel", "net/ipv4", "net/ipv6", "net/bridge", "net/netfilter", "net/core")
# Values that move by themselves, not settings anybody changed.
SYSCTL_VOLATILE = ("kernel/random/", "kernel/ns_last_pid", "net/netfilter/nf_conntrack_count")
IPTABLES = (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore"))
IPSET = "ipset"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class HostError(Exception):
    """A host change that could not be made or undone; says which and why."""


def _writable_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for tree in SYSCTL_TREES:
        # os.walk skips a folder that vanishes mid-walk: a pod's veth going while the node stops.
        for folder, dirs, files in os.walk(SYSCTL_ROOT / tree):
            rel = Path(folder).relative_to(SYSCTL_ROOT)
            if rel.name == "conf":  # per-interface settings come and go with the interfaces
                dirs[:] = [d for d in dirs if d == "all"]
            for name in files:
                key, path = str(rel / name), Path(folder, name)
                if key.startswith(SYSCTL_VOLATILE):
                    continue
                with contextlib.suppress(OSError):
                    if path.stat().st_mode & 0o200:
                        values[key] = path.read_text().strip()
    return values


def _run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _tables(dump: str) -> dict[str, str]:
    """iptables-save output by table: `*nat` ... `COMMIT`."""
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in dump.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [line])
        elif current is not None and not line.startswith("#"):
            current.append(line)
            if line == "COMMIT":
                current = None
    return {name: "\n".join(lines) + "\n" for name, lines in tables.items()}


def _empty_table(name: str, dump: str) -> str:
    """A table as iptables-restore rebuilds it with nothing in it: its built-in chains with
    policy ACCEPT and no rules (user chains are dropped by the flush restore does)."""
    builtin = [
        line.split()[0]
        for line in dump.splitlines()
        if line.startswith(":") and "-" not in line.split()[1]
    ]
    return "\n".join([f"*{name}", *(f"{c} ACCEPT [0:0]" for c in builtin), "COMMIT"]) + "\n"


def ipsets() -> list[str]:
    """The names of the kernel's ipsets (none when the ipset tool is not installed: a node
    without the NetworkPolicy engine creates none)."""
    if shutil.which(IPSET) is None:
        return []
    return _run([IPSET, "list", "-n"]).split()


def _mounts_under(prefixes: tuple[Path, ...]) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_under(*prefixes: Path) -> list[str]:
    """Unmount everything mounted at or below `prefixes`, deepest first (lazily where busy)."""
    done = []
    for point in _mounts_under(prefixes):
        proc = subprocess.run(["umount", point], capture_output=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(point)
    return done


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, name=systemd and the v2 `unified`)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split()[0] in ("cgroup", "cgroup2"):
            out.append(Path(before.split()[4]))
    return out


def make_cgroup(name: str) -> None:
    """The kubelet's cgroupRoot in every hierarchy, cpuset copied from the parent (a cpuset
    cgroup with empty cpus takes no task)."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for key in ("cpuset.cpus", "cpuset.mems"):
            if (path / key).is_file() and not (path / key).read_text().strip():
                (path / key).write_text((hierarchy / key).read_text())


def kill_cgroup(name: str, timeout_s: float = 10) -> list[str]:
    """SIGKILL every process left in the cgroup `name` or below it (containers whose shim is
    gone: a kept node stopped from its folders); the lines say which."""
    killed: list[str] = []
    for hierarchy in cgroup_hierarchies():
        for procs in sorted((hierarchy / name).rglob("cgroup.procs")):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), 9)
                    killed.append(f"killed process {pid} left in cgroup {name}")

    def empty() -> bool:
        return not any(
            p.read_text().strip()
            for h in cgroup_hierarchies()
            for p in (h / name).rglob("cgroup.procs")
        )

    # Not a failure: remove_cgroup reports a cgroup still holding a task.
    with contextlib.suppress(TimeoutError):
        wait_until(empty, timeout_s, 0.2, f"cgroup {name} to be empty")
    return sorted(set(killed))


def remove_cgroup(name: str) -> list[str]:
    """rmdir the cgroup `name` and everything below it in every hierarchy, deepest first; a
    cgroup still holding a task is reported, not forced."""
    left = []
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / name
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for path in [*dirs, top]:
            try:
                path.rmdir()
            except OSError as exc:
                left.append(f"{path}: {exc.strerror}")
    return left


@dataclass
class HostState:
    """The machine's settings before the node started: sysctls, iptables, links, ipsets."""

    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, dict[str, str]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            _writable_sysctls(),
            {save: _tables(_run([save])) for save, _ in IPTABLES},
            set(_links()),
            set(ipsets()),
        )

    def save(self, path: Path) -> None:
        """For `kgops cluster stop` of a cluster kept running (KEEP=1)."""
        doc = {
            "sysctls": self.sysctls,
            "iptables": self.iptables,
            "links": sorted(self.links),
            "ipsets": sorted(self.sets),
        }
        path.write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: Path) -> HostState:
        doc = json.loads(path.read_text())
        return cls(doc["sysctls"], doc["iptables"], set(doc["links"]), set(doc.get("ipsets", [])))

    def restore(self) -> list[str]:
        """Undo what changed since `capture`: sysctls written back, iptables tables as they
        were (tables that did not exist emptied), then the ipsets that did not exist destroyed
        (a set is destroyed only once no rule matches on it), links that did not exist deleted.
        The lines say what was undone."""
        undone = []
        now = _writable_sysctls()
        for key, before in sorted(self.sysctls.items()):
            if now.get(key, before) != before:
                try:
                    (SYSCTL_ROOT / key).write_text(before)
                    undone.append(f"sysctl {key.replace('/', '.')}: {now[key]} -> {before}")
                except OSError as exc:
                    undone.append(f"sysctl {key.replace('/', '.')}: NOT restored ({exc})")
        for save, restore in IPTABLES:
            current = _tables(_run([save]))
            before_tables = self.iptables.get(save, {})
            changed = [t for t in current if _rules(current[t]) != _rules(before_tables.get(t))]
            if not changed:
                continue
            dump = "".join(before_tables.get(t) or _empty_table(t, current[t]) for t in changed)
            _run([restore], stdin=dump)
            undone.append(f"{save.removesuffix('-save')}: tables {', '.join(changed)} restored")
        undone += _destroy_sets(sorted(set(ipsets()) - self.sets))
        for link in sorted(set(_links()) - self.links):
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
            undone.append(f"link {link} deleted")
        return undone


def _destroy_sets(names: list[str]) -> list[str]:
    """Flush, then destroy each set (a list:set set references others: flushing them all
    first lets every destroy pass)."""
    for name in names:
        subprocess.run([IPSET, "flush", name], capture_output=True, check=False)
    undone = []
    for name in names:
        proc = subprocess.run([IPSET, "destroy", name], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            undone.append(f"ipset {name} destroyed")
        else:
            undone.append(f"ipset {name}: NOT restored ({proc.stderr.strip()})")
    if names and len(names) > 3:
        kept = [line for line in undone if "NOT" in line]
        return [f"ipsets destroyed: {len(names) - len(kept)} ({', '.join(names[:3])}, ...)", *kept]
    return undone


def _rules(table: str | None) -> list[str]:
    """A table's chains and rules, counters left out."""
    if not table:
        return []
    return [line.rsplit(" [", 1)[0] for line in table.splitlines() if line[:1] in (":", "-")]


def _links() -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir()]


def is_root() -> bool:
    return os.geteuid() == 0
