"""Where a runtime's Python time goes under load: py-spy samples the threads of the server's
processes that hold the GIL (so waiting in the event loop's poll does not count) while the
open-loop generator offers a fixed rate, after a warm-up; the samples are grouped by the library
of their innermost Python frame (standard-library frames are charged to their caller). Native
code that releases the GIL (uvloop's I/O, most of numpy) is not seen.

    kgops profile --runtime sklearnserver --server-args "..."

Prints a table of the shares and writes py-spy's collapsed stacks beside it (--out).
"""

from __future__ import annotations

from kserve_gitops.load import measure

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kserve_gitops.base import tables
from kserve_gitops.bench import runtime_configs
from kserve_gitops.bench.stacks import shares
from kserve_gitops.repo import Repo
from kserve_gitops.serving import process, runtimes


def profile(
    repo: Repo,
    config: runtime_configs.Config,
    protocol: str,
    rate: float,
    duration: float,
    out: Path,
    *,
    prefix: Sequence[str] = (),
) -> tuple[Counter[str], dict[str, Any]]:
    """Start the configuration (through `prefix`: bench.pinning.exec_prefix pins it), offer
    `rate` for `duration` s while py-spy samples the server's processes (MLServer: its
    inference workers too), return the groups and the load point."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not spy:
        raise FileNotFoundError("py-spy not found: it is a dev dependency (`make venv`)")
    raw = out.with_suffix(".collapsed")
    with process.running(
        repo,
        config.runtime,
        port=process.port_block(),
        extra_args=list(config.args),
        timeout=180,
        prefix=prefix,
    ) as local:
        measure.measure(
            repo, local, protocol, 50, 2
        )  # warm-up: imports and first requests not sampled
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(local.process.pid),
                "--subprocesses",
                "--format",
                "raw",
                "--full-filenames",
                "--gil",
                "--rate",
                "200",
                "--duration",
                f"{duration:g}",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)  # py-spy attaches before the load starts
        point = measure.measure(repo, local, protocol, rate, duration)
        output, _ = sampler.communicate(timeout=60)
    if sampler.returncode != 0 or not raw.is_file():
        # Attaching needs ptrace rights over the server (root, or kernel.yama.ptrace_scope 0).
        raise RuntimeError(f"py-spy failed (exit {sampler.returncode}): {output.strip()[-1500:]}")
    return shares(raw.read_text()), point


def table(counts: Counter[str]) -> list[str]:
    total = sum(counts.values()) or 1
    return tables.markdown(
        [(name, f"{100 * count / total:.1f}%") for name, count in counts.most_common()],
        ("where the samples were", "share"),
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    p = argparse.ArgumentParser(prog="kgops profile", description=__doc__)
    p.add_argument("--config", choices=[c.name for c in runtime_configs.CONFIGS], required=True)
    p.add_argument("--protocol", choices=("v1", "v2"), default="v2")
    p.add_argument("--rate", type=float, default=200.0, help="offered req/s (default 200)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load (default 15)")
    p.add_argument("--out", type=Path, help="markdown table (default reports/profile-<config>.md)")
    args = p.parse_args(argv)
    repo = repo or Repo.discover()
    [config] = runtime_configs.select([args.config])
    try:
        runtimes.check(config.runtime, args.protocol)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or repo.reports / f"profile-{config.name}-{args.protocol}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        counts, point = profile(repo, config, args.protocol, args.rate, args.duration, out)
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lat = point["latency_ms"]
    lines = [
        f"{config.name} ({shlex.join(config.args) or 'defaults'}), {args.protocol} at "
        f"{args.rate:g} req/s for {args.duration:g} s, {started}: avg {lat['avg']:.2f} ms, p99 "
        f"{lat['p99']:.2f} ms, {sum(counts.values())} py-spy samples (200 Hz, threads holding"
        " the GIL):",
        "",
        *table(counts),
    ]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {repo.rel(out)} and {repo.rel(out.with_suffix('.collapsed'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
