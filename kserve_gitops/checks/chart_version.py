"""CI check: a chart whose files changed since BASE must bump `version` in its Chart.yaml
(prometheus-community's rule), so a published version never changes content."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from kserve_gitops.repo import Repo


def _git(*args: str, root: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _version_at(rev: str, chart_yaml: str, root: Path) -> str | None:
    try:
        text = _git("show", f"{rev}:{chart_yaml}", root=root)
    except RuntimeError:
        return None  # the chart is new since rev
    return str((yaml.safe_load(text) or {}).get("version"))


def unbumped(repo: Repo, base: str) -> list[str]:
    """Problems: charts changed since `base` whose Chart.yaml version is the same as at `base`."""
    root = repo.root
    changed = _git("diff", "--name-only", f"{base}...HEAD", "--", "charts/", root=root).split()
    problems: list[str] = []
    for chart in sorted({Path(f).parts[1] for f in changed if len(Path(f).parts) > 2}):
        chart_yaml = f"charts/{chart}/Chart.yaml"
        if not (root / chart_yaml).is_file():
            continue  # chart deleted
        before = _version_at(base, chart_yaml, root)
        now = str((yaml.safe_load((root / chart_yaml).read_text()) or {}).get("version"))
        if before == now:
            problems.append(
                f"{chart_yaml}: version: charts/{chart}/ changed since {base} but "
                f"version is still {now}; bump it"
            )
    return problems


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="origin/main", help="revision to compare against")
    args = parser.parse_args(argv)
    try:
        problems = unbumped(repo or Repo.discover(), args.base)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"chart versions: every chart changed since {args.base} is bumped")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
