"""The two runtimes that serve the model's artifact, by the names the chart and the Makefile
use (RUNTIME=): KServe's sklearn server (V1 and V2) and MLServer (V2 only)."""

from __future__ import annotations

RUNTIMES = ("sklearnserver", "mlserver")
PROTOCOLS = {"sklearnserver": ("v1", "v2"), "mlserver": ("v2",)}
# The module that launches each runtime locally (same arguments), and where it says "loaded".
LAUNCHERS = {
    "sklearnserver": "kserve_gitops.serving.server",
    "mlserver": "kserve_gitops.serving.mlserver",
}
READY_PATHS = {"sklearnserver": "/v1/models/{model}", "mlserver": "/v2/models/{model}/ready"}


def check(runtime: str, protocol: str | None = None) -> None:
    """ValueError naming what is wrong: an unknown runtime, or a protocol it cannot serve."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if protocol is not None and protocol not in PROTOCOLS[runtime]:
        raise ValueError(
            f"runtime {runtime} serves protocol {' and '.join(PROTOCOLS[runtime])} only, "
            f"not {protocol} (MLServer has no V1 :predict endpoint): use protocol v2"
        )


def ready_path(runtime: str, model: str) -> str:
    return READY_PATHS[runtime].format(model=model)
