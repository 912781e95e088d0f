"""Send predictions to a KServe endpoint (V1 or V2 REST), retrying transient failures.

    from kserve_gitops.serving import client
    client.predict("http://127.0.0.1:8080", "sklearn-iris", [[5.1, 3.5, 1.4, 0.2]])  # [0]

Transient: connection errors, timeouts and 429/502/503/504 (what a restarting pod or a busy
Knative activator answers); with RetryPolicy(retry_not_found=True) also 404, what the ingress
answers for a route it does not have yet. Everything else fails at once with the server's
message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    BaseRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

PROTOCOLS = ("v1", "v2")
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
Rows = Sequence[Sequence[float]]
OnRetry = Callable[["PredictionError", int], None]
Retry = TypeVar("Retry", bound=BaseRetrying)


class PredictionError(Exception):
    """The endpoint refused or failed the request; `status` is None for transport errors."""

    def __init__(self, message: str, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # attempts after the first
    backoff: float = 0.2  # seconds before the first retry, doubled each time
    max_backoff: float = 5.0
    retry_not_found: bool = False  # 404: a fresh route the gateway does not serve yet

    def again(self, exc: BaseException) -> bool:
        return isinstance(exc, PredictionError) and (
            exc.transient or (self.retry_not_found and exc.status == 404)
        )

    def retrying(self, kind: type[Retry], on_retry: OnRetry | None) -> Retry:
        """tenacity's Retrying or AsyncRetrying with this policy; the last PredictionError is
        raised when it is final (not transient, or retries exhausted)."""

        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome is not None:
                error = state.outcome.exception()
                assert isinstance(error, PredictionError)
                on_retry(error, state.attempt_number)

        return kind(
            stop=stop_after_attempt(self.retries + 1),
            # backoff before the first retry, doubled each time up to max_backoff
            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=retry_if_exception(self.again),
            before_sleep=before_sleep,
            reraise=True,
        )


def predict_path(protocol: str, model: str) -> str:
    _check_protocol(protocol)
    return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"


def v1_body(rows: Rows) -> dict[str, Any]:
    return {"instances": [list(row) for row in rows]}


def v2_body(rows: Rows, input_name: str = "input-0") -> dict[str, Any]:
    width = len(rows[0]) if rows else 0
    data = [value for row in rows for value in row]
    return {
        "inputs": [
            {"name": input_name, "shape": [len(rows), width], "datatype": "FP64", "data": data}
        ]
    }


def request_body(protocol: str, rows: Rows) -> dict[str, Any]:
    _check_protocol(protocol)
    return v1_body(rows) if protocol == "v1" else v2_body(rows)


def parse_predictions(protocol: str, body: Any, expected: int | None = None) -> list[Any]:
    """One prediction per row: a class label, or a list of probabilities (PREDICT_PROBA)."""
    try:
        if protocol == "v1":
            predictions = list(body["predictions"])
        else:
            output = body["outputs"][0]
            data, shape = list(output["data"]), output["shape"]
            width = shape[1] if len(shape) == 2 else 1
            predictions = (
                data if width == 1 else [data[i : i + width] for i in range(0, len(data), width)]
            )
    except (KeyError, IndexError, TypeError) as exc:
        raise PredictionError(f"unexpected {protocol} response {str(body)[:200]!r}: {exc}") from exc
    if expected is not None and len(predictions) != expected:
        raise PredictionError(f"{len(predictions)} predictions for {expected} rows")
    return predictions


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def _headers(host_header: str | None) -> dict[str, str]:
    return {"content-type": "application/json", **({"host": host_header} if host_header else {})}


def _transport_error(exc: httpx.TransportError) -> PredictionError:
    """Connect and read errors and timeouts: transient."""
    return PredictionError(f"{type(exc).__name__}: {exc}", transient=True)


def _outcome(protocol: str, response: httpx.Response, rows: int) -> list[Any]:
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError as exc:
            raise PredictionError(f"response is not JSON: {response.text[:200]!r}") from exc
        return parse_predictions(protocol, body, rows)
    try:
        detail = response.json().get("error") or response.text
    except ValueError:
        detail = response.text
    raise PredictionError(
        f"HTTP {response.status_code}: {str(detail)[:300]}",
        status=response.status_code,
        transient=response.status_code in TRANSIENT_STATUS,
    )


def predict(
    base_url: str,
    model: str,
    rows: Rows,
    protocol: str = "v1",
    host_header: str | None = None,
    policy: RetryPolicy | None = None,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
    on_retry: OnRetry | None = None,
) -> list[Any]:
    """Predictions for `rows` in order; PredictionError once retries are exhausted."""
    policy = policy or RetryPolicy()
    url = base_url.rstrip("/") + predict_path(protocol, model)
    body, headers = request_body(protocol, rows), _headers(host_header)
    owned = client is None
    http = client or httpx.Client(timeout=timeout)

    def attempt() -> list[Any]:
        try:
            response = http.post(url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc
        return _outcome(protocol, response, len(rows))

    try:
        return policy.retrying(Retrying, on_retry)(attempt)
    finally:
        if owned:
            http.close()


async def apredict(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    rows: Rows,
    protocol: str = "v1",
    host_header: str | None = None,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
) -> list[Any]:
    """The asyncio twin of predict(), for many batches in flight on one client."""
    policy = policy or RetryPolicy()
    url = base_url.rstrip("/") + predict_path(protocol, model)
    body, headers = request_body(protocol, rows), _headers(host_header)

    async def attempt() -> list[Any]:
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc
        return _outcome(protocol, response, len(rows))

    return await policy.retrying(AsyncRetrying, on_retry)(attempt)
