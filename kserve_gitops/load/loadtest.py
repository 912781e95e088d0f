"""Open-loop load test of a prediction endpoint with Locust (as a library) and an SLO verdict.

`kgops loadtest --target URL --rate 80 --duration 30s --protocol v1 --env dev`
sends requests at a fixed arrival rate (`--ramp-to R`: one changing linearly to R over the run),
prints progress, writes reports/<timestamp>/ (Locust CSV and HTML, summary.json, plot.png),
prints the verdict table and exits 1 when a target is missed.
`--ui` runs the Locust dashboard on :8089 against the same locustfile instead, with an SLO tab.
`--workers N` makes this process a Locust master with N worker processes sharing the plan;
`--worker --master-host HOST` runs a worker of a master on another machine.
"""

from __future__ import annotations

from kserve_gitops.load import headless, openloop, workers
from kserve_gitops.load.summary import LoadOptions

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from kserve_gitops.repo import Repo, slo


def _parser(repo: Repo) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgops loadtest", description=__doc__)
    p.add_argument("--target", default="http://127.0.0.1:8080", help="base URL of the server")
    p.add_argument("--host-header", help="Host header, e.g. an InferenceService host via ingress")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="one more request header, repeatable (e.g. Knative-Serving-Revision for the"
        " activator); headless runs only",
    )
    p.add_argument("--protocol", choices=("v1", "v2"), help="default from the SLO config")
    p.add_argument("--rate", type=float, help="arrival rate, req/s (default from the SLO config)")
    p.add_argument("--duration", help="e.g. 30s or 2m (default from the SLO config)")
    p.add_argument(
        "--ramp-to",
        type=float,
        metavar="RATE",
        help="the arrival rate changes linearly from --rate to this over --duration (req/s);"
        " headless runs only",
    )
    p.add_argument("--users", type=int, help="concurrent users (default: max(16, rate/2))")
    p.add_argument("--model", help="(default: the checkout's only model)")
    p.add_argument("--env", choices=repo.environment_names, help="apply this env's SLO overrides")
    p.add_argument("--slo-config", type=Path, help="default config/slo.yaml")
    p.add_argument("--reports", type=Path, help="report root (default reports/)")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--ui", action="store_true", help="Locust web dashboard instead of a run")
    p.add_argument("--web-port", type=int, default=8089)
    dist = p.add_argument_group("distributed load (this process is the Locust master)")
    dist.add_argument("--workers", type=int, default=0, help="worker processes on this machine")
    dist.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="also wait for this many workers from other machines (--worker --master-host)",
    )
    dist.add_argument(
        "--master-bind-host",
        help="interface workers connect to (default 127.0.0.1; * with --remote-workers)",
    )
    dist.add_argument("--master-port", type=int, default=5557)
    dist.add_argument(
        "--worker", action="store_true", help="be a worker of the master at --master-host"
    )
    dist.add_argument("--master-host", default="127.0.0.1", help="the master, for --worker")
    return p


def _ui(
    repo: Repo, opts: LoadOptions, web_port: int, env_name: str | None, args: argparse.Namespace
) -> int:
    """Replace this process with the Locust dashboard, load settings as its defaults."""
    env = {
        **os.environ,
        "KGOPS_ROOT": str(repo.root),
        "KGOPS_RATE": str(opts.rate),
        "KGOPS_MODEL": opts.model,
    }
    for key, value in (
        ("KGOPS_HOST_HEADER", opts.host_header),
        ("KGOPS_ENV", env_name),
        ("KGOPS_SLO_CONFIG", args.slo_config and str(args.slo_config.resolve())),
        ("KGOPS_REPORTS", args.reports and str(args.reports.resolve())),
    ):
        if value:
            env[key] = value
    user_class = "V1User" if opts.protocol == "v1" else "V2User"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(headless.locustfile(repo)),
        "--host",
        opts.target,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        "--users",
        str(opts.users),
        "--spawn-rate",
        str(opts.users),
    ]
    if opts.workers or opts.remote_workers:
        cmd += ["--master-bind-host", opts.master_bind_host]
        # The forked workers connect to --master-port, the master listens on --master-bind-port.
        cmd += ["--master-bind-port", str(opts.master_port), "--master-port", str(opts.master_port)]
        # --processes forks the local workers; a master alone waits for remote ones.
        cmd += ["--processes", str(opts.workers)] if opts.workers else ["--master"]
    spread = f", {opts.workers} local worker processes" if opts.workers else ""
    print(
        f"Locust dashboard: http://127.0.0.1:{web_port}  ({opts.rate:g} req/s open loop{spread};"
        " SLO tab)"
    )
    sys.stdout.flush()
    os.execve(sys.executable, [*cmd, user_class], env)


def _worker(repo: Repo, master_host: str, master_port: int) -> int:
    """Replace this process with a Locust worker; the master sends it its share of the plan."""
    print(f"Locust worker of {master_host}:{master_port}")
    sys.stdout.flush()
    os.execve(
        sys.executable,
        workers.command(headless.locustfile(repo), master_host, master_port),
        {**os.environ, "KGOPS_ROOT": str(repo.root)},
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    args = _parser(repo).parse_args(argv)
    if args.worker:
        return _worker(repo, args.master_host, args.master_port)
    try:
        config = slo.for_run(
            repo,
            args.env,
            args.slo_config,
            args.rate,
            args.duration,
            protocol=args.protocol,
            users=args.users,
        )
    except slo.SloConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if urlparse(args.target).scheme not in ("http", "https"):
        print(f"error: --target {args.target!r}: expected an http(s):// URL", file=sys.stderr)
        return 2
    if args.workers < 0 or args.remote_workers < 0:
        print("error: --workers, --remote-workers: expected 0 or more", file=sys.stderr)
        return 2
    if args.ramp_to is not None and not args.ramp_to > 0:
        print(f"error: --ramp-to {args.ramp_to:g}: expected a positive rate", file=sys.stderr)
        return 2
    if args.ramp_to is not None and args.ui:
        print("error: --ramp-to: the dashboard runs a fixed rate; drop --ui", file=sys.stderr)
        return 2
    headers: list[tuple[str, str]] = []
    for given in args.header:
        name, colon, value = given.partition(":")
        if not colon or not name.strip():
            print(f"error: --header {given!r}: expected 'NAME: VALUE'", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    load = config.load
    opts = LoadOptions(
        target=args.target,
        protocol=load.protocol,
        rate=load.rate,
        duration=load.duration,
        users=load.users or openloop.default_users(max(load.rate, args.ramp_to or 0)),
        host_header=args.host_header,
        headers=tuple(headers),
        model=args.model or repo.default_model(),
        progress_s=args.progress,
        workers=args.workers,
        remote_workers=args.remote_workers,
        master_bind_host=args.master_bind_host or ("*" if args.remote_workers else "127.0.0.1"),
        master_port=args.master_port,
        ramp_to=args.ramp_to,
    )
    if args.ui:
        return _ui(repo, opts, args.web_port, args.env, args)
    try:
        result = headless.run_load(
            repo,
            opts,
            config.targets,
            env_name=args.env,
            slo_source=config.source,
            report_root=args.reports or repo.reports,
        )
    except workers.WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"SLO verdict ({config.source}{', env ' + args.env if args.env else ''}):")
    print(slo.verdict_table([slo.Check(**c) for c in result.summary["checks"]]))
    print(f"{result.summary['verdict']}  report: {repo.rel(result.report_dir)}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
