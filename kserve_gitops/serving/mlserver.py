"""Serve a scikit-learn model locally with Seldon's MLServer, as KServe's kserve-mlserver
runtime runs it in the cluster (`make serve RUNTIME=mlserver`).

    kgops serve-mlserver --model-name sklearn-iris --http-port 8080

MLServer runs from its own virtualenv (.venv-mlserver, `make mlserver-venv`): its fastapi and
pydantic pins conflict with kserve's. The environment is the one KServe's controller and the
runtime template give the container (MLSERVER_MODEL_NAME, MLSERVER_MODEL_URI,
MLSERVER_MODEL_IMPLEMENTATION, MLSERVER_HTTP_PORT, MLSERVER_GRPC_PORT), and `mlserver start` gets
the model directory as the image's command does. MLServer speaks V2 only and serves /metrics
on its own port (MLSERVER_METRICS_PORT, 8082 unless set), not on the HTTP port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kserve_gitops.base.wait import wait_until
from kserve_gitops.repo import Repo
from kserve_gitops.serving import runtimes
from kserve_gitops.serving.flags import boolean
from kserve_gitops.serving.process import answers
from kserve_gitops.serving.server import default_model_dir

# KServe v0.20.0 sets this model class (label modelClass) for modelFormat sklearn.
IMPLEMENTATION = "mlserver_sklearn.SKLearnModel"
# The runtime template's ports; the metrics port is MLServer's default (the template sets none).
CLUSTER_HTTP_PORT, CLUSTER_GRPC_PORT, CLUSTER_METRICS_PORT = 8080, 9000, 8082
VENV_ENV = "KGOPS_MLSERVER_VENV"


def venv_dir(repo: Repo) -> Path:
    return Path(os.environ.get(VENV_ENV) or repo.root / ".venv-mlserver")


def mlserver_command(repo: Repo) -> Path:
    """The `mlserver` entry point of the MLServer virtualenv, or an error saying how to get it."""
    command = venv_dir(repo) / "bin" / "mlserver"
    if not command.is_file():
        raise FileNotFoundError(
            f"{repo.rel(command)} not found: run `make mlserver-venv` (or set {VENV_ENV})"
        )
    return command


def mlserver_env(
    model_name: str,
    model_dir: Path,
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    host: str,
    parallel_workers: int,
    debug: bool,
) -> dict[str, str]:
    """MLServer's settings as environment variables, named as KServe sets them in the pod."""
    return {
        "MLSERVER_MODEL_NAME": model_name,
        "MLSERVER_MODEL_URI": str(model_dir),
        "MLSERVER_MODEL_IMPLEMENTATION": IMPLEMENTATION,
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        "MLSERVER_HOST": host,
        "MLSERVER_PARALLEL_WORKERS": str(parallel_workers),
        "MLSERVER_DEBUG": "true" if debug else "false",
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgops serve-mlserver",
        description="Serve a scikit-learn model with MLServer (V2 REST and gRPC), as the "
        "cluster's kserve-mlserver runtime does.",
    )
    p.add_argument("--model-name", help="(default: the checkout's only model)")
    p.add_argument(
        "--model-dir",
        type=Path,
        help="directory holding exactly one model file (default: models/<model-name>/v1)",
    )
    p.add_argument("--http-port", type=int, default=CLUSTER_HTTP_PORT)
    # Locally the other two ports follow the HTTP port, so that servers side by side never clash.
    p.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help=f"gRPC V2 port (default: --http-port + 1; {CLUSTER_GRPC_PORT} in the pod)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help=f"Prometheus /metrics port (default: --http-port + 2; {CLUSTER_METRICS_PORT} in the "
        "pod, where the runtime's prometheus.kserve.io/port annotation says "
        f"{CLUSTER_HTTP_PORT})",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="MLServer's parallel_workers: inference processes behind the one HTTP process; "
        "0 runs inference in the HTTP process (default: %(default)s, the image's default)",
    )
    p.add_argument(
        "--debug",
        type=boolean,
        default=True,
        metavar="BOOL",
        help="MLServer's debug setting: DEBUG logs and uvicorn's access log (default: true, "
        "the image's default)",
    )
    return p


def _announce_when_ready(url: str, model_name: str, metrics_port: int) -> None:
    ready = url + runtimes.ready_path("mlserver", model_name)
    with contextlib.suppress(TimeoutError):  # not ready: MLServer's own log says why
        wait_until(lambda: answers(ready), 120, 0.1, f"{ready} to answer")
        print(
            f"{model_name} ready (MLServer): {url} (V2 /v2/models/{model_name}/infer; "
            f"no V1), metrics on port {metrics_port}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    args = build_parser().parse_args(argv)
    repo = repo or Repo.discover()
    args.model_name = args.model_name or repo.default_model()
    for name in ("http_port", "grpc_port", "metrics_port", "workers"):
        if getattr(args, name) < 0:
            print(f"error: --{name.replace('_', '-')}: expected 0 or more", file=sys.stderr)
            return 2
    model_dir = (args.model_dir or default_model_dir(repo, args.model_name)).resolve()
    # The same checks as KServe's server: one artifact, pickled by the pinned scikit-learn
    # (the MLServer virtualenv pins the same version; tests/test_mlserver.py checks it).
    from kserve_gitops.serving.sklearn_model import check_pickled_by_this_sklearn, find_model_file

    try:
        check_pickled_by_this_sklearn(find_model_file(model_dir))
        command = mlserver_command(repo)
    except (RuntimeError, OSError) as exc:
        hint = " (run `make train` to build it)" if args.model_dir is None else ""
        print(
            f"error: cannot serve {args.model_name!r} with MLServer: {exc}{hint}", file=sys.stderr
        )
        return 1
    grpc_port = args.grpc_port or args.http_port + 1
    metrics_port = args.metrics_port or args.http_port + 2
    env = mlserver_env(
        args.model_name,
        model_dir,
        http_port=args.http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=args.host,
        parallel_workers=args.workers,
        debug=args.debug,
    )
    # MLServer writes .metrics/ and .envs/ into its working directory: keep them out of the tree.
    work = Path(tempfile.mkdtemp(prefix="kgops-mlserver-"))
    try:
        process = subprocess.Popen(
            [str(command), "start", str(model_dir)], cwd=work, env={**os.environ, **env}
        )

        def forward(signum: int, _frame: object) -> None:
            process.send_signal(signum)  # MLServer shuts its inference workers down itself

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        local = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        url = f"http://{local}:{args.http_port}"
        threading.Thread(
            target=_announce_when_ready, args=(url, args.model_name, metrics_port), daemon=True
        ).start()
        return process.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
