"""Serve a model locally with KServe's own ModelServer (the library inside the cluster's
kserve-sklearnserver runtime); kserve_gitops.serving.process runs it in the background.

    kgops serve --model-name sklearn-iris --http-port 8080 --workers 1

V1 /v1/models/<name>:predict, V2 /v2/models/<name>/infer, health, metadata and /metrics all
come from kserve.ModelServer; kserve_gitops.serving.sklearn_model adds input validation and
kserve_gitops.serving.asgi_guard a body size limit and opt-in fault injection.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import json
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from kserve_gitops.base.wait import wait_until
from kserve_gitops.repo import Repo
from kserve_gitops.serving.asgi_guard import DEFAULT_MAX_BODY, GuardSettings
from kserve_gitops.serving.flags import boolean
from kserve_gitops.serving.process import answers


def default_model_dir(repo: Repo, model_name: str) -> Path:
    """Where `kgops train` puts a model's first version, the one served when none is named."""
    return repo.models / model_name / "v1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgops serve",
        description="Serve a scikit-learn model with KServe's ModelServer (V1 + V2 REST).",
    )
    p.add_argument(
        "--model-name", help="name in the endpoint paths (default: the checkout's only model)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        help="directory holding exactly one model file (default: models/<model-name>/v1)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="HTTP port, on all interfaces (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default: %(default)s)"
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="also serve gRPC V2 on this port (default: off; upstream serves 8081)",
    )
    p.add_argument(
        "--predict-proba",
        action="store_true",
        help="answer class probabilities (sets PREDICT_PROBA=true like the runtime)",
    )
    tuning = p.add_argument_group("performance knobs (upstream defaults)")
    tuning.add_argument(
        "--enable-latency-logging",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="KServe's per-request latency and timing log lines, kserve.trace (default: true)",
    )
    tuning.add_argument(
        "--access-log",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="uvicorn's per-request access log line (default: true)",
    )
    tuning.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: uvloop or asyncio's own; auto is KServe's behaviour, uvloop for --workers"
        " > 1 and asyncio's loop for one worker (default: %(default)s)",
    )
    tuning.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=65,
        help="idle keep-alive seconds, keep above the proxy's idle timeout (default: %(default)s)",
    )
    tuning.add_argument(
        "--max-asyncio-workers",
        type=int,
        default=None,
        help="thread pool of the event loop's default executor (default: min(32, cpus + 4))",
    )
    guard = p.add_argument_group("request guard")
    guard.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY,
        help="larger request bodies get 413 (default: %(default)s)",
    )
    guard.add_argument(
        "--fault-first",
        type=int,
        default=0,
        help="fail the first N inference requests of each worker (testing)",
    )
    guard.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="fail this fraction of inference requests at random (testing)",
    )
    guard.add_argument(
        "--fault-status",
        type=int,
        default=503,
        help="status of injected faults (default: %(default)s)",
    )
    guard.add_argument(
        "--fault-delay-ms",
        type=float,
        default=0.0,
        help="add this latency to every inference request (testing)",
    )
    return p


def install_guard() -> None:
    """Put asgi_guard in front of KServe's app; settings come from the environment."""
    from kserve.model_server import app

    from kserve_gitops.serving.asgi_guard import RequestGuard

    app.add_middleware(RequestGuard)
    # Emitted by KServe's own use of FastAPI on the first request; nothing for users to act on.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def _log_config_file(access_log: bool, latency_logging: bool) -> str:
    """KServe's log config with the per-request loggers turned down; workers read the file."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    if not access_log:
        config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    if not latency_logging:
        # kserve.trace also carries the timing middleware's two lines per request.
        config["loggers"]["kserve.trace"]["level"] = "WARNING"
    fd, path = tempfile.mkstemp(prefix="kgops-log-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return path


def use_uvloop() -> None:
    """Run the next asyncio.run() on uvloop. KServe hands --event-loop to uvicorn, which applies
    it only in the worker processes it spawns (--workers > 1); one worker runs in KServe's own
    asyncio.run() on asyncio's default loop whatever the setting."""
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # ModelServer.setup_event_loop() calls asyncio.get_event_loop() first; uvloop's policy
    # raises instead of creating one.
    asyncio.set_event_loop(asyncio.new_event_loop())


def endpoints(base_url: str, model_name: str) -> str:
    return f"{base_url} (V1 /v1/models/{model_name}:predict, V2 /v2/models/{model_name}/infer)"


def _announce_when_ready(port: int, model_name: str, timeout: float = 120) -> None:
    # ModelServer.start() blocks; this thread prints one clear line once requests succeed.
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/v1/models/{model_name}"
    with contextlib.suppress(TimeoutError):  # not ready: the server's own log says why
        wait_until(lambda: answers(ready), timeout, 0.1, f"{ready} to answer")
        print(f"{model_name} ready: {endpoints(url, model_name)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    args = build_parser().parse_args(argv)
    repo = repo or Repo.discover()
    args.model_name = args.model_name or repo.default_model()
    model_dir = args.model_dir or default_model_dir(repo, args.model_name)
    settings = GuardSettings(
        max_body_bytes=args.max_body_bytes,
        fault_first=args.fault_first,
        fault_rate=args.fault_rate,
        fault_status=args.fault_status,
        fault_delay_ms=args.fault_delay_ms,
    )
    # Environment, not arguments: KServe's spawned workers inherit it.
    os.environ.update(settings.to_env())
    if args.predict_proba:
        os.environ["PREDICT_PROBA"] = "true"

    import kserve.model_server
    from kserve.errors import ModelMissingError

    from kserve_gitops.serving.sklearn_model import SKLearnModel

    model = SKLearnModel(args.model_name, model_dir)
    try:
        model.load()
    except (ModelMissingError, RuntimeError, OSError, ValueError) as exc:
        hint = " (run `make train` to build it)" if args.model_dir is None else ""
        where = repo.rel(model_dir)
        print(
            f"error: cannot load model {args.model_name!r} from {where}: {exc}{hint}",
            file=sys.stderr,
        )
        return 1
    if not (args.access_log and args.enable_latency_logging):
        # ModelServer and the workers it spawns read the log config from KServe's parsed args.
        kserve.model_server.args.log_config_file = _log_config_file(
            args.access_log, args.enable_latency_logging
        )
    install_guard()
    if args.workers > 1:
        from kserve_gitops.serving import workers

        workers.install()
    if args.event_loop == "uvloop" and args.workers == 1:
        use_uvloop()
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port or 8081,
        enable_grpc=bool(args.grpc_port),
        workers=args.workers,
        enable_latency_logging=args.enable_latency_logging,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        max_asyncio_workers=args.max_asyncio_workers,
    )
    threading.Thread(
        target=_announce_when_ready, args=(args.http_port, args.model_name), daemon=True
    ).start()
    server.start([model])
    return 0


# KServe starts --workers > 1 as spawned processes that re-import this module under the name
# __mp_main__ without running main(): install the guard for them here too.
if __name__ == "__mp_main__":
    install_guard()

if __name__ == "__main__":
    raise SystemExit(main())
