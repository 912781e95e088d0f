"""The controllers' network: a process in its own namespace reaches the machine's loopback
through the bridge and nothing else; a pod address forwards into the namespace; two servers on
the same port in two namespaces do not collide."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from kserve_gitops.controllers.network import Netns, PodForwarder

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

HOST_PORT = 37590  # this range, 37500-37999


def _http(port: int, ns: Netns | None = None, text: str = "") -> subprocess.Popen[bytes]:
    code = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        f"    def do_GET(s): s.send_response(200); s.end_headers(); s.wfile.write(b'{text}')\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    prefix = ns.exec_prefix() if ns else []
    return subprocess.Popen([*prefix, sys.executable, "-c", code], stderr=subprocess.DEVNULL)


def _in_ns(ns: Netns, url: str) -> subprocess.CompletedProcess[str]:
    code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=3).read().decode())"
    return subprocess.run([*ns.exec_prefix(), sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30)  # fmt: skip


@pytest.fixture
def namespaces() -> Iterator[tuple[Netns, Netns]]:
    a, b = Netns("kgops-test-a"), Netns("kgops-test-b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _wait(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("not reachable in time")


def test_bridge_reaches_the_machine_and_nothing_else(namespaces: tuple[Netns, Netns]) -> None:
    ns, _ = namespaces
    host = _http(HOST_PORT, text="host")
    try:
        ns.bridge_out(HOST_PORT)
        _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{HOST_PORT}/").status == 200)
        assert _in_ns(ns, f"http://127.0.0.1:{HOST_PORT}/").stdout.strip() == "host"
        outside = _in_ns(ns, "http://192.0.2.1/")
        assert outside.returncode != 0 and "unreachable" in outside.stderr
    finally:
        host.terminate()


def test_pod_addresses_forward_into_each_namespace(namespaces: tuple[Netns, Netns]) -> None:
    a, b = namespaces
    servers = [_http(8443, a, "a"), _http(8443, b, "b")]  # one port, two namespaces
    fwd = PodForwarder()
    try:
        fwd.sync([("198.18.250.1", 8443, "a", a.dial(8443)),
                  ("198.18.250.2", 8443, "b", b.dial(8443))])  # fmt: skip
        for ip in ("198.18.250.1", "198.18.250.2"):
            _wait(lambda ip=ip: urllib.request.urlopen(f"http://{ip}:8443/").status == 200)
        assert urllib.request.urlopen("http://198.18.250.1:8443/").read() == b"a"
        assert urllib.request.urlopen("http://198.18.250.2:8443/").read() == b"b"
        fwd.sync([("198.18.250.1", 8443, "a", a.dial(8443))])  # the pod of b went away
        assert fwd.describe() == ["198.18.250.1:8443 -> a"]
        with pytest.raises(OSError):
            urllib.request.urlopen("http://198.18.250.2:8443/", timeout=3)
    finally:
        fwd.close()
        for proc in servers:
            proc.terminate()
