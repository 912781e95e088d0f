"""ASGI middleware in front of KServe's app: request body limit and opt-in fault injection.

Settings come from environment variables so that every uvicorn worker process (KServe spawns
them, they do not inherit Python state) applies the same ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENV_MAX_BODY = "KGOPS_MAX_BODY_BYTES"
ENV_FAULT_FIRST = "KGOPS_FAULT_FIRST"  # fail the first N inference requests of each worker
ENV_FAULT_RATE = "KGOPS_FAULT_RATE"  # then fail this fraction of them at random
ENV_FAULT_STATUS = "KGOPS_FAULT_STATUS"  # with this HTTP status
ENV_FAULT_DELAY_MS = "KGOPS_FAULT_DELAY_MS"  # and delay every inference request this long
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class GuardSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY
    fault_first: int = 0
    fault_rate: float = 0.0
    fault_status: int = 503
    fault_delay_ms: float = 0.0

    @classmethod
    def from_env(cls) -> GuardSettings:
        env = os.environ
        return cls(
            max_body_bytes=int(env.get(ENV_MAX_BODY, DEFAULT_MAX_BODY)),
            fault_first=int(env.get(ENV_FAULT_FIRST, 0)),
            fault_rate=float(env.get(ENV_FAULT_RATE, 0.0)),
            fault_status=int(env.get(ENV_FAULT_STATUS, 503)),
            fault_delay_ms=float(env.get(ENV_FAULT_DELAY_MS, 0.0)),
        )

    def to_env(self) -> dict[str, str]:
        return {
            ENV_MAX_BODY: str(self.max_body_bytes),
            ENV_FAULT_FIRST: str(self.fault_first),
            ENV_FAULT_RATE: str(self.fault_rate),
            ENV_FAULT_STATUS: str(self.fault_status),
            ENV_FAULT_DELAY_MS: str(self.fault_delay_ms),
        }

    @property
    def faults(self) -> bool:
        return bool(self.fault_first or self.fault_rate or self.fault_delay_ms)


def is_inference(path: str) -> bool:
    return path.endswith((":predict", ":explain", "/infer"))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: GuardSettings | None = None):
        self.app = app
        self.settings = settings or GuardSettings.from_env()
        self.inference_requests = 0
        self._random = random.Random(0)  # reproducible fault sequence per worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(send, int(length))
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # Chunked upload: buffer up to the limit, then replay it to the app.
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # client went away
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > limit:
                    await self._too_large(send, None)
                    return
            receive = _replay(body, receive)
        if self.settings.faults and is_inference(scope["path"]):
            failure = await self._inject_fault()
            if failure:
                await _send_json(send, self.settings.fault_status, {"error": failure})
                return
        await self.app(scope, receive, send)

    async def _too_large(self, send: Send, size: int | None) -> None:
        limit = self.settings.max_body_bytes
        told = f"is {size} bytes" if size is not None else "is chunked and"
        error = f"request body {told} over the {limit}-byte limit (--max-body-bytes)"
        await _send_json(send, 413, {"error": error})

    async def _inject_fault(self) -> str | None:
        s = self.settings
        self.inference_requests += 1
        if s.fault_delay_ms:
            await asyncio.sleep(s.fault_delay_ms / 1000)
        if self.inference_requests <= s.fault_first:
            return f"injected fault {self.inference_requests}/{s.fault_first} ({ENV_FAULT_FIRST})"
        if s.fault_rate and self._random.random() < s.fault_rate:
            return f"injected fault ({ENV_FAULT_RATE}={s.fault_rate})"
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
