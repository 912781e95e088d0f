"""What the real node changes on the machine is undone: the record-and-restore of sysctls,
iptables tables and links, exercised on this machine (root) with harmless changes of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kserve_gitops.node import host

pytestmark = pytest.mark.node
SYSCTL = Path("/proc/sys/net/ipv4/tcp_fin_timeout")  # read on new FIN_WAIT2 sockets only


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("changes sysctls, iptables and links: needs root")
    for tool in ("iptables-save", "ip"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            pytest.skip(f"{tool} missing (make node-tools)")


def test_restore_undoes_sysctls_iptables_and_links(as_root: None, tmp_path: Path) -> None:
    state = host.HostState.capture()
    state.save(tmp_path / "state.json")  # a kept cluster's stop reads it back
    before_rules = _run("iptables-save", "-t", "filter")
    fin = SYSCTL.read_text().strip()
    try:
        SYSCTL.write_text(str(int(fin) + 7))
        _run("iptables", "-t", "filter", "-N", "KGOPS-TEST")
        _run("iptables", "-t", "filter", "-A", "KGOPS-TEST", "-j", "RETURN")
        _run("ip", "link", "add", "kgopstest0", "type", "bridge")
        undone = host.HostState.load(tmp_path / "state.json").restore()
    finally:
        SYSCTL.write_text(fin)
        subprocess.run(["ip", "link", "delete", "kgopstest0"], capture_output=True, check=False)
        subprocess.run(["iptables", "-t", "filter", "-F", "KGOPS-TEST"], capture_output=True)
        subprocess.run(["iptables", "-t", "filter", "-X", "KGOPS-TEST"], capture_output=True)
    assert f"sysctl net.ipv4.tcp_fin_timeout: {int(fin) + 7} -> {fin}" in undone
    assert any(line.startswith("iptables: tables") and "filter" in line for line in undone)
    assert "link kgopstest0 deleted" in undone
    assert SYSCTL.read_text().strip() == fin
    assert "KGOPS-TEST" not in _run("iptables-save", "-t", "filter")
    assert host._rules(before_rules) == host._rules(_run("iptables-save", "-t", "filter"))
    assert not Path("/sys/class/net/kgopstest0").exists()


def test_cgroups_made_in_every_hierarchy_are_removed(as_root: None) -> None:
    name = "kgops-test-cgroup"
    host.make_cgroup(name)
    made = [h / name for h in host.cgroup_hierarchies() if (h / name).is_dir()]
    (made[0] / "child").mkdir()
    assert made, "no cgroup hierarchy took the cgroup"
    assert host.remove_cgroup(name) == []
    assert not any(path.exists() for path in made)


def test_sysctls_skip_per_interface_settings_and_folders_that_vanish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "net/ipv4/conf"
    for iface in ("all", "veth0"):
        (conf / iface).mkdir(parents=True)
        (conf / iface / "forwarding").write_text("1\n")
    (tmp_path / "net/ipv4/ip_forward").write_text("1\n")
    monkeypatch.setattr(host, "SYSCTL_ROOT", tmp_path)
    walk = os.walk

    def racing_walk(top: Path) -> object:
        for folder, dirs, files in walk(top):
            yield folder, dirs, files
            if folder == str(tmp_path / "net/ipv4"):
                (tmp_path / "net/ipv4/conf/all/forwarding").unlink()  # gone mid-walk

    monkeypatch.setattr(host.os, "walk", racing_walk)
    assert host._writable_sysctls() == {"net/ipv4/ip_forward": "1"}
