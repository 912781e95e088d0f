"""A V1 predict server that is not the bottleneck, for measuring the load generator itself.

`python -m kserve_gitops.load.fastserver --port 19100` answers POST /v1/models/<name>:predict
with the reference model's real predictions, memoized per request body (the model is
deterministic), on one asyncio (uvloop) event loop with HTTP/1.1 keep-alive: tens of thousands
of requests a second on one core, where KServe's own server does about two thousand. Only for
benchmarks and tests of the generator; `make serve` is the server to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

import joblib
import numpy
import uvloop

from kserve_gitops.repo import Repo
from kserve_gitops.serving.server import default_model_dir


class Predictor:
    def __init__(self, artifact: Path) -> None:
        self.model = joblib.load(artifact)
        self.cache: dict[bytes, bytes] = {}

    def answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        if not (path.startswith("/v1/models/") and path.endswith(":predict")):
            return 404, b'{"error": "only POST /v1/models/<name>:predict"}'
        cached = self.cache.get(body)
        if cached is None:
            try:
                rows = json.loads(body)["instances"]
                got = self.model.predict(numpy.array(rows)).tolist()
            except (ValueError, KeyError, TypeError) as exc:
                return 400, json.dumps({"error": str(exc)}).encode()
            cached = self.cache[body] = json.dumps({"predictions": got}).encode()
        return 200, cached


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}


class Connection(asyncio.Protocol):
    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:  # every complete request in the buffer (pipelining included)
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            parts = head[0].split(" ")
            status, doc = self.predictor.answer(parts[1] if len(parts) > 1 else "", body)
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (status, _REASONS[status], len(doc))
                + doc
            )


async def serve(artifact: Path, host: str, port: int) -> None:
    predictor = Predictor(artifact)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(predictor), host, port, backlog=1024)
    print(f"fast predict server on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kserve_gitops.load.fastserver", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", help="(default: the checkout's only model)")
    args = p.parse_args(argv)
    repo = repo or Repo.discover()
    artifact = default_model_dir(repo, args.model or repo.default_model()) / "model.joblib"
    if not artifact.is_file():
        print(f"error: {repo.rel(artifact)} is missing: run `make train`", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        uvloop.run(serve(artifact, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
