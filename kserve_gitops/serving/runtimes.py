"""The two runtimes that serve the sklearn-iris artifact, by the names the chart and the
Makefile use (RUNTIME=): KServe's sklearn server (V1 and V2) and MLServer (V2 only)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kserve_gitops.serving import mlserver, server

RUNTIMES = ("sklearnserver", "mlserver")
PROTOCOLS = {"sklearnserver": ("v1", "v2"), "mlserver": ("v2",)}


def check(runtime: str, protocol: str | None = None) -> None:
    """ValueError naming what is wrong: an unknown runtime, or a protocol it cannot serve."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if protocol is not None and protocol not in PROTOCOLS[runtime]:
        raise ValueError(
            f"runtime {runtime} serves protocol {' and '.join(PROTOCOLS[runtime])} only, "
            f"not {protocol} (MLServer has no V1 :predict endpoint): use protocol v2"
        )


def start_background(runtime: str, **kwargs: Any) -> server.LocalServer:
    """server.start_background with the runtime's launcher and readiness endpoint."""
    check(runtime)
    if runtime == "mlserver":
        name = kwargs.get("model_name", server.DEFAULT_MODEL)
        kwargs = {
            "module": "kserve_gitops.serving.mlserver",
            "ready_path": mlserver.ready_path(name),
            **kwargs,
        }
    return server.start_background(**kwargs)


@contextlib.contextmanager
def running(runtime: str, **kwargs: Any) -> Iterator[server.LocalServer]:
    """`with running("mlserver", port=38100) as local: ...`; always stops it."""
    local = start_background(runtime, **kwargs)
    try:
        yield local
    finally:
        local.stop()
