"""Predictions through the cluster's ingress, for a route that may be brand new: besides what
the client retries (connection errors, 429/502/503/504), a 404 means the gateway has no route
for the Host yet (Istio configuration still spreading), so it is retried too, until a deadline.
The executor's Predict steps and the in-cluster tests (tests/e2e/cluster) both send through it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.predict(ingress, model, rows, protocol, host_header=host, policy=policy)
        except client.PredictionError as exc:
            if not (exc.transient or exc.status == 404) or time.monotonic() > deadline:
                raise
            if echo is not None:
                echo(f"    not yet: {exc}")
        time.sleep(pause_s)
