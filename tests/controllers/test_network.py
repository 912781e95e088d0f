"""The controllers' network: a process in its own namespace reaches the machine's loopback
through the bridge and nothing else; a pod address forwards into the namespace; two servers on
the same port in two namespaces do not collide.

No wall-clock bound decides a result: a server says when it listens (a line on its stdout) and
every request is sent after that, once; the timeouts below only end a run that hangs."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator

import pytest

from kserve_gitops.controllers.network import Netns, PodForwarder
from kserve_gitops.localcluster.controlplane import ClusterConfig, ensure_local_route
from tests import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

# Other checkouts on the machine may run these tests at the same time: names, the host port
# and the pod addresses are this process's own, not fixed ones two runs would both take.
RUN = os.getpid()


def _host_port(first: int = 37590, last: int = 37999) -> int:
    """A free port of this issue's range, 37500-37999."""
    for port in range(first, last + 1):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError(f"no free port in {first}-{last}")


HANG_S = 120  # only a hung process or server hits this, however busy the machine


def _http(port: int, ns: Netns | None = None, text: str = "") -> subprocess.Popen[bytes]:
    """A one-line HTTP server (in `ns`, or on the machine), returned once it listens."""
    code = (
        "import http.server as h, sys\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        f"    def do_GET(s): s.send_response(200); s.end_headers(); s.wfile.write(b'{text}')\n"
        f"srv = h.HTTPServer(('127.0.0.1', {port}), H)\n"
        "print('listening', flush=True)\n"
        "srv.serve_forever()\n"
    )
    prefix = ns.exec_prefix() if ns else []
    # stderr to a file: the handler logs every request there, and a pipe nobody reads fills.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        # Blocks until the server has bound its socket (or exited: then the line is empty).
        if proc.stdout.readline() == b"listening\n":
            return proc
        proc.kill()
        proc.wait(HANG_S)
        err.seek(0)
        last = err.read().decode(errors="replace").strip().splitlines()[-1:]
    raise AssertionError(f"server on port {port} did not start: {last}")


def _in_ns(ns: Netns, url: str) -> subprocess.CompletedProcess[str]:
    code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=3).read().decode())"
    return subprocess.run(
        [*ns.exec_prefix(), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=HANG_S) as response:
        assert response.status == 200
        return response.read()


@pytest.fixture
def namespaces() -> Iterator[tuple[Netns, Netns]]:
    a, b = Netns(f"kgops-test-a-{RUN}"), Netns(f"kgops-test-b-{RUN}")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def pod_ips() -> tuple[str, str]:
    """Two addresses of the pod range, routed to this machine as the kwok cluster routes them
    (without the route nothing can listen there: EADDRNOTAVAIL)."""
    route = ClusterConfig.load(REPO).local_route
    ensure_local_route(route)
    # A pair in 198.18.250.0-198.18.255.255, the top of the pod range, picked by process.
    first = ipaddress.ip_address("198.18.250.0") + (RUN % 768) * 2
    ips = (str(first), str(first + 1))
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(route) for ip in ips)
    return ips


def test_bridge_reaches_the_machine_and_nothing_else(namespaces: tuple[Netns, Netns]) -> None:
    ns, _ = namespaces
    port = _host_port()
    host = _http(port, text="host")
    try:
        ns.bridge_out(port)
        assert _get(f"http://127.0.0.1:{port}/") == b"host"
        assert _in_ns(ns, f"http://127.0.0.1:{port}/").stdout.strip() == "host"
        outside = _in_ns(ns, "http://192.0.2.1/")
        assert outside.returncode != 0 and "unreachable" in outside.stderr
    finally:
        host.terminate()


def test_pod_addresses_forward_into_each_namespace(
    namespaces: tuple[Netns, Netns], pod_ips: tuple[str, str]
) -> None:
    a, b = namespaces
    ip_a, ip_b = pod_ips
    servers = [_http(8443, a, "a"), _http(8443, b, "b")]  # one port, two namespaces
    fwd = PodForwarder()
    try:
        fwd.sync([(ip_a, 8443, "a", a.dial(8443)), (ip_b, 8443, "b", b.dial(8443))])
        assert fwd.errors == []  # both listen before sync returns: no polling needed
        assert fwd.describe() == [f"{ip_a}:8443 -> a", f"{ip_b}:8443 -> b"]
        assert _get(f"http://{ip_a}:8443/") == b"a"
        assert _get(f"http://{ip_b}:8443/") == b"b"
        fwd.sync([(ip_a, 8443, "a", a.dial(8443))])  # the pod of b went away
        assert fwd.describe() == [f"{ip_a}:8443 -> a"]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{ip_b}:8443/", timeout=3)
    finally:
        fwd.close()
        for proc in servers:
            proc.terminate()
