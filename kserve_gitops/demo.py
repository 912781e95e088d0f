"""The whole local story in one command, no cluster needed (`make demo`).

Train the model if needed, validate every chart and environment, serve the model in the
background with KServe's ModelServer and our sklearn model class (or MLServer, V2 only:
--runtime mlserver), load-test it open loop at the configured rate, print the SLO verdict and
the report path, stop the server. Exit 0 only if every step and every target passed.
"""

from __future__ import annotations

from kserve_gitops.load import headless, openloop
from kserve_gitops.load.summary import LoadOptions

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from kserve_gitops.lifecycle import train
from kserve_gitops.repo import Repo, slo
from kserve_gitops.serving import process, runtimes


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    envs = repo.environment_names
    p = argparse.ArgumentParser(prog="kgops demo", description=__doc__)
    p.add_argument(
        "--env", default=envs[0], choices=envs, help="SLO overrides (default: %(default)s)"
    )
    p.add_argument("--model", help="(default: the checkout's only model)")
    p.add_argument("--rate", type=float, help="arrival rate, req/s (default from the SLO config)")
    p.add_argument("--duration", help="load duration, e.g. 30s (default from the SLO config)")
    p.add_argument(
        "--protocol", choices=("v1", "v2"), help="default: the SLO config's (v2 for mlserver)"
    )
    p.add_argument("--runtime", choices=runtimes.RUNTIMES, default="sklearnserver")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--slo-config", type=Path, help="default config/slo.yaml")
    args = p.parse_args(argv)
    started = time.monotonic()
    protocol = args.protocol or ("v2" if args.runtime == "mlserver" else None)
    model = args.model or repo.default_model()
    try:
        config = slo.for_run(
            repo, args.env, args.slo_config, args.rate, args.duration, protocol=protocol
        )
        runtimes.check(args.runtime, config.load.protocol)
    except (slo.SloConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    _step(1, f"model: train {model} v1 if missing or stale")
    try:
        model_dir = train.ensure_trained(repo, model, "v1")
    except (train.RecipeError, OSError, ValueError) as exc:
        print(f"error: training failed: {exc}", file=sys.stderr)
        return 1
    print(f"model ready: {repo.rel(model_dir)}")

    _step(2, "validate: render and check every chart scenario and environment")
    if importlib.util.find_spec("kserve_gitops.checks.validate") is None:
        print("error: kserve_gitops.checks.validate is missing from this checkout", file=sys.stderr)
        return 1
    validation = subprocess.run(
        [sys.executable, "-m", "kserve_gitops.checks.validate"],
        env={**os.environ, "KGOPS_ROOT": str(repo.root)},
        check=False,
    )
    if validation.returncode != 0:
        print(f"error: validation failed (exit {validation.returncode})", file=sys.stderr)
        return 1

    _step(3, f"serve: {args.runtime}, {args.workers} worker(s), in the background")
    try:
        local = process.start_background(
            repo, args.runtime, model_name=model, workers=args.workers, timeout=120
        )
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"serving {local.url} ({args.runtime}); log: {local.log_path}")

    try:
        load = config.load
        _step(4, f"load test: {load.protocol} at {load.rate:g} req/s for {load.duration:g}s")
        opts = LoadOptions(
            target=local.url,
            protocol=load.protocol,
            rate=load.rate,
            duration=load.duration,
            users=load.users or openloop.default_users(load.rate),
            model=model,
        )
        result = headless.run_load(
            repo,
            opts,
            config.targets,
            env_name=args.env,
            slo_source=config.source,
            report_root=repo.reports,
        )
    finally:
        _step(5, "stop the server")
        code = local.stop()
        print(f"server stopped (exit {code})")

    print(f"\nSLO verdict ({config.source}, env {args.env}):")
    print(slo.verdict_table([slo.Check(**c) for c in result.summary["checks"]]))
    print(f"report: {repo.rel(result.report_dir)}")
    print(f"demo {'PASSED' if result.passed else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
