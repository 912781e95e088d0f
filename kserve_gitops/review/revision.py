"""`make diff BASE=<git ref>`: what a change does to each environment. Every environment is
rendered at the base revision and at the working tree (kserve_gitops.review.snapshot) and
compared object by object (kserve_gitops.repo.diff).

The base is unpacked with `git archive` into a temporary directory and rendered there by a
subprocess of this code (KGOPS_ROOT pointing at it), so the working tree is never touched and
both sides are rendered by the same code. Without --base, the base is the merge base of HEAD
with the default branch (origin/HEAD's target, else origin/main, else main).

Exit status: 0 nothing rendered changes, 1 something does, 2 the diff could not be made.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kserve_gitops.repo import Repo, diff
from kserve_gitops.repo.render import RenderError
from kserve_gitops.review import snapshot
from kserve_gitops.upstream import charts

# GitHub refuses a job summary over 1 MiB; stay well below it.
MARKDOWN_LIMIT = 900_000


class ReviewError(Exception):
    """The base could not be resolved or rendered; the message says which and why."""


def _git(repo: Repo, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=repo.root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ReviewError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout.strip()


def _exists(repo: Repo, ref: str) -> bool:
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ReviewError:
        return False
    return True


def default_branch(repo: Repo) -> str:
    try:
        head = _git(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    except ReviewError:
        head = ""
    for ref in (head, "origin/main", "main"):
        if ref and _exists(repo, ref):
            return ref
    raise ReviewError(
        "no default branch: neither origin/HEAD, origin/main nor main exists; pass --base <git ref>"
    )


def resolve_base(repo: Repo, base: str | None) -> tuple[str, str]:
    """(commit, how to name it): the given ref, or the merge base with the default branch."""
    if base:
        if not _exists(repo, base):
            raise ReviewError(f"--base {base}: not a commit in {repo.root}")
        return _git(repo, "rev-parse", f"{base}^{{commit}}"), base
    branch = default_branch(repo)
    commit = _git(repo, "merge-base", "HEAD", branch)
    return commit, f"merge base with {branch}"


def unpack(repo: Repo, commit: str, dest: Path) -> None:
    """The tree of `commit` into `dest` (git archive: no checkout, no index, no worktree)."""
    proc = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=repo.root, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise ReviewError(f"git archive {commit}: {proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")


def render_tree(root: Path, chart_cache: Path, label: str) -> dict[str, snapshot.Environment]:
    """Every environment of the tree at `root` (the revision `label`), rendered by this code in
    a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "kserve_gitops.review.snapshot", "--chart-cache", str(chart_cache)],
        cwd=Path(__file__).resolve().parents[2],  # this harness, whatever the base tree holds
        env={**os.environ, "KGOPS_ROOT": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        error = proc.stderr.strip().removeprefix("error: ")
        raise ReviewError(f"base revision {label}: {error}")
    return snapshot.from_json(proc.stdout)


def compare(
    base: dict[str, snapshot.Environment], head: dict[str, snapshot.Environment]
) -> dict[str, tuple[list[diff.ObjectChange], list[str]]]:
    """Per environment (at either revision): the object changes and the rendering notes."""
    out = {}
    for env in sorted(base.keys() | head.keys()):
        old, new = base.get(env, snapshot.Environment()), head.get(env, snapshot.Environment())
        notes = sorted(set(old.notes) | set(new.notes))
        out[env] = (diff.compare(old.objects, new.objects), notes)
    return out


def _summary(result: dict[str, tuple[list[diff.ObjectChange], list[str]]]) -> str:
    changed = [env for env, (changes, _) in result.items() if changes]
    everything = [c for changes, _ in result.values() for c in changes]
    if not changed:
        return f"no rendered object changes in any environment ({', '.join(result)})"
    return (
        f"{len(changed)} of {len(result)} environments change ({', '.join(changed)}): "
        f"{diff.counts(everything)}"
    )


def format_text(result: dict[str, tuple[list[diff.ObjectChange], list[str]]], base: str) -> str:
    lines = [f"rendered difference: {base} -> working tree"]
    for env, (changes, notes) in result.items():
        lines.append(f"== {env}: {diff.counts(changes) if changes else 'no change'}")
        lines += [f"   note: {n}" for n in notes]
        lines += [line for c in changes for line in diff.change_lines(c)]
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


def format_markdown(result: dict[str, tuple[list[diff.ObjectChange], list[str]]], base: str) -> str:
    """For a GitHub job summary: the count line on top, one collapsible section per
    environment with a ```diff block."""
    parts = [f"**{_summary(result)}**\n\nBase: {base}, compared with this revision.\n"]
    for env, (changes, notes) in result.items():
        title = f"{env}: {diff.counts(changes) if changes else 'no change'}"
        body = [f"- note: {n}" for n in notes]
        if changes:
            block = "\n".join(line for c in changes for line in diff.change_lines(c))
            body += [""] if body else []  # a blank line ends the notes' list
            body += ["```diff", block.replace("```", "`\u200b``"), "```"]
        section = "\n".join([f"<details><summary>{title}</summary>", "", *body, "", "</details>"])
        parts.append(section + "\n")
    text = "\n".join(parts)
    if len(text.encode()) > MARKDOWN_LIMIT:
        cut = text.encode()[:MARKDOWN_LIMIT].decode(errors="ignore")
        text = cut + "\n```\n\n</details>\n\n(cut at the job summary size limit; run `make diff`)\n"
    return text


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rendered difference per environment between a Git revision and the "
        "working tree. Exit 0: no change, 1: changes, 2: error."
    )
    parser.add_argument("--base", help="Git ref (default: merge base with the default branch)")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument(
        "--chart-cache",
        type=Path,
        help="the upstream chart cache (default: .cache/charts; `make charts` fills it)",
    )
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    chart_cache = args.chart_cache or charts.cache_dir(repo)
    try:
        commit, how = resolve_base(repo, args.base)
        label = f"{how} ({commit[:12]})"
        with (
            tempfile.TemporaryDirectory(prefix="kgops-base-") as tmp,
            ThreadPoolExecutor(1) as pool,
        ):
            unpack(repo, commit, Path(tmp))
            snapshot.prepare_charts(repo, chart_cache)
            base_future = pool.submit(render_tree, Path(tmp), chart_cache, label)
            head = snapshot.environments(repo, chart_cache)
            base = base_future.result()
    except (ReviewError, RenderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = compare(base, head)
    fmt = format_markdown if args.format == "markdown" else format_text
    sys.stdout.write(fmt(result, label))
    return 1 if any(changes for changes, _ in result.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
