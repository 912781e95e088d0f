"""Predictions through the cluster's ingress, for a route that may be brand new: besides what
the client retries (connection errors, 429/502/503/504), a 404 means the gateway has no route
for the Host yet (Istio configuration still spreading), so it is retried too, until a deadline.
The executor's Predict steps and the in-cluster tests (tests/e2e/cluster) both send through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_fixed

from kserve_gitops.serving import client


def predict(
    ingress: str,
    model: str,
    rows: client.Rows,
    protocol: str,
    host: str,
    timeout_s: float,
    policy: client.RetryPolicy,
    echo: Callable[[str], None] | None = None,
    pause_s: float = 3,
) -> list[Any]:
    """client.predict, retried on a transient failure or a 404 until `timeout_s` has passed;
    then the last PredictionError is raised."""

    def not_yet(state: RetryCallState) -> None:
        if echo is not None and state.outcome is not None:
            echo(f"    not yet: {state.outcome.exception()}")

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(pause_s),
        # What the client retries, and a 404.
        retry=retry_if_exception(client.RetryPolicy(retry_not_found=True).again),
        before_sleep=not_yet,
        reraise=True,
    )
    return retrying(client.predict, ingress, model, rows, protocol, host_header=host, policy=policy)
