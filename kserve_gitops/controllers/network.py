"""Networking of the controller processes.

Knative's commands bind fixed ports on every address (the health probes of every
knative.dev/pkg main on :8080, the autoscaler's stats server on :8080, webhooks on 8443): as
processes of one machine they would collide with each other. Each Knative process therefore
runs in a network namespace of its own (`ip netns`, the isolation a pod gives), where it binds
what it wants. This module joins those namespaces to the cluster:

- `Netns.bridge_out(port)`: 127.0.0.1:<port> inside the namespace reaches 127.0.0.1:<port> of
  the machine (the API server);
- `PodForwarder`: <pod IP>:<container port> of the kwok pod the process stands in for (the
  API server calls webhook Services at their endpoints, 198.18.0.0/15, routed to this machine)
  reaches the process's port, inside its namespace or on the machine's loopback.

A socket belongs to the network namespace of the thread that created it, so each namespace
has one worker thread that entered it (setns) and creates its sockets; the relays copy bytes
between sockets, TLS untouched. Nothing is sent outside 127.0.0.0/8 and the pod addresses.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

Dial = Callable[[], socket.socket]
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class NetworkError(Exception):
    """A namespace or listener that could not be set up; says which and why."""


def _relay(client: socket.socket, dial: Dial) -> None:
    # RuntimeError: the namespace's worker is shut down (the run is ending).
    with client, contextlib.suppress(OSError, RuntimeError):
        upstream = dial()
        with upstream:
            sel = selectors.DefaultSelector()
            sel.register(client, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, client)
            while True:
                for key, _ in sel.select(timeout=600):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)


def serve(sock: socket.socket, dial: Dial, name: str) -> threading.Thread:
    """Accept on a listening socket until it is closed; relay each connection to `dial()`."""

    def accept() -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=_relay, args=(client, dial), daemon=True).start()

    thread = threading.Thread(target=accept, name=name, daemon=True)
    thread.start()
    return thread


def _listen(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def loopback_dial(port: int) -> Dial:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=5)


@dataclass
class Netns:
    """A named network namespace with loopback up, and a worker thread inside it."""

    name: str
    listeners: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = NETNS_DIR / self.name
        if self.path.exists():  # left by a run that was killed
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        for argv in (
            ["ip", "netns", "add", self.name],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise NetworkError(
                    f"`{' '.join(argv)}`: {proc.stderr.strip()} (network namespaces need root)"
                )
        self._pool = ThreadPoolExecutor(1, f"netns-{self.name}", initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.path}")
        finally:
            os.close(fd)

    def dial(self, port: int) -> Dial:
        """Connect to 127.0.0.1:<port> inside the namespace."""
        return lambda: self._pool.submit(socket.create_connection, ("127.0.0.1", port), 5).result()

    def bridge_out(self, port: int) -> None:
        """127.0.0.1:<port> inside the namespace -> 127.0.0.1:<port> of the machine."""
        sock = self._pool.submit(_listen, "127.0.0.1", port).result()
        self.listeners.append(sock)
        serve(sock, loopback_dial(port), f"bridge-{self.name}-{port}")

    def exec_prefix(self) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--"]

    def close(self) -> None:
        for sock in self.listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._pool.shutdown(wait=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@dataclass
class _Forward:
    sock: socket.socket
    target: str


@dataclass
class PodForwarder:
    """(pod IP, port) -> a process's port, kept in step with the pods by `sync`."""

    forwards: dict[tuple[str, int], _Forward] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def sync(self, wanted: Iterable[tuple[str, int, str, Dial]]) -> None:
        """Forward exactly `wanted`: (pod IP, pod port, target label, dial); close the rest."""
        want = {(ip, port): (label, dial) for ip, port, label, dial in wanted}
        for key in [
            k for k, fwd in self.forwards.items() if k not in want or want[k][0] != fwd.target
        ]:
            self._close(key)
        for (ip, port), (label, dial) in want.items():
            if (ip, port) in self.forwards:
                continue
            try:
                sock = _listen(ip, port)
            except OSError as exc:
                msg = f"cannot listen on {ip}:{port} for {label}: {exc}"
                if msg not in self.errors:
                    self.errors.append(msg)
                continue
            serve(sock, dial, f"fwd-{ip}:{port}")
            self.forwards[(ip, port)] = _Forward(sock, label)

    def _close(self, key: tuple[str, int]) -> None:
        fwd = self.forwards.pop(key)
        with contextlib.suppress(OSError):
            fwd.sock.shutdown(socket.SHUT_RDWR)
        fwd.sock.close()

    def close(self) -> None:
        for key in list(self.forwards):
            self._close(key)

    def describe(self) -> list[str]:
        return [f"{ip}:{port} -> {fwd.target}" for (ip, port), fwd in sorted(self.forwards.items())]
