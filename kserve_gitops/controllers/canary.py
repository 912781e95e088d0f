"""`make canary` / `make rollback` applied to the running InferenceService of a kwok cluster.

The rollout commands edit a values file; here they edit the values file of a copy of the
repository (KGOPS_ROOT, so the checkout stays untouched), and each edit is installed as a user
would (`helm upgrade` of our chart with that file). After each stage, the traffic split KServe
and Knative compute (the InferenceService's and the Knative Service's status.traffic) must be
the one the rollout promises:

    canary <version> <percent>%   the new revision <percent>%, the stable revision the rest
    rollback (first run)          100% back on the stable revision, its rebuild created at 0%
    rollback (second run)         100% on the latest revision (the rebuilt stable one)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.base.wait import wait_until
from kserve_gitops.controllers.chain import Reader
from kserve_gitops.repo import Repo, render

IGNORE = shutil.ignore_patterns(
    ".venv*", ".git", "reports", ".cache", "__pycache__", ".*_cache", "node_modules"
)


class CanaryError(Exception):
    """A stage whose traffic split is not the promised one; names the stage and what it saw."""


@dataclass(frozen=True)
class Split:
    latest_created: str
    traffic: tuple[tuple[str, int], ...]  # (revision, percent), from the Knative Service

    def percent(self, revision: str) -> int:
        return sum(p for r, p in self.traffic if r == revision)

    def describe(self) -> str:
        shown = ", ".join(f"{r} {p}%" for r, p in self.traffic) or "none"
        return f"traffic [{shown}], latest created {self.latest_created}"


def split(reader: Reader, ns: str, model: str) -> Split | None:
    ksvcs = reader.list(
        "serving.knative.dev", "v1", "services", ns, f"serving.kserve.io/inferenceservice={model}"
    )
    return split_of(ksvcs[0]) if ksvcs else None


def split_of(ksvc: Mapping[str, Any]) -> Split:
    """The split a Knative Service's status declares."""
    st = ksvc.get("status") or {}
    traffic = tuple(
        (str(t.get("revisionName")), int(t.get("percent") or 0)) for t in st.get("traffic") or []
    )
    return Split(str(st.get("latestCreatedRevisionName") or ""), traffic)


def wait_for(
    reader: Reader,
    ns: str,
    model: str,
    what: str,
    check: Callable[[Split], bool],
    timeout_s: float = 180,
) -> Split:
    seen: Split | None = None

    def wanted() -> Split | None:
        nonlocal seen
        seen = split(reader, ns, model)
        return seen if seen is not None and check(seen) else None

    return wait_until(
        wanted,
        timeout_s,
        3,
        lambda: f"{what} (last: {seen.describe() if seen else 'no Knative Service'})",
        CanaryError,
    )


def repo_copy(repo: Repo, dest: Path) -> Repo:
    shutil.copytree(repo.root, dest, ignore=IGNORE)
    return Repo(dest)


def run(
    repo: Repo,
    env: str,
    model: str,
    namespace: str,
    version: str,
    percent: int,
    kubeconfig: Path,
    cmd_env: Mapping[str, str],
    workdir: Path,
    echo: Callable[[str], None],
    on_stage: Callable[[str, Split], None] = lambda _stage, _split: None,
) -> list[str]:
    """Canary, then roll back in two runs, each edit made by `kgops rollout` in a copy of the
    checkout and installed from there; the split after each stage, as lines (and to
    `on_stage`, as each is seen)."""
    copy = repo_copy(repo, workdir / "repo")
    values = render.model_values_file(copy, env, model)
    reader = Reader(str(kubeconfig))

    def stage(args: list[str]) -> None:
        for argv in (
            [
                sys.executable,
                "-m",
                "kserve_gitops.lifecycle.rollout",
                *args,
                "--env",
                env,
                "--model",
                model,
            ],
            [
                "helm",
                "upgrade",
                "--install",
                model,
                repo.rel(repo.model_chart),
                "--namespace",
                namespace,
                "--values",
                str(values),
                "--timeout",
                "5m",
            ],
        ):
            cwd = copy.root if argv[0] == sys.executable else repo.root
            run_env = {**cmd_env, "KGOPS_ROOT": str(copy.root)}
            proc = subprocess.run(
                argv, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=600, check=False
            )
            echo(f"    $ {' '.join(argv[2:] if argv[0] == sys.executable else argv)}")
            if proc.returncode != 0:
                raise CanaryError(
                    f"`{' '.join(argv)}` exited {proc.returncode}: "
                    f"{(proc.stderr or proc.stdout).strip()[-800:]}"
                )

    before = wait_for(
        reader,
        namespace,
        model,
        "the stable revision at 100%",
        lambda s: s.percent(s.latest_created) == 100,
    )
    stable = before.latest_created
    lines = [f"before: {before.describe()}"]
    on_stage("before", before)

    stage(["canary", "--version", version, "--percent", str(percent)])
    canary = wait_for(
        reader,
        namespace,
        model,
        f"canary {version}: new revision {percent}%, {stable} the rest",
        lambda s: (
            s.latest_created != stable
            and s.percent(s.latest_created) == percent
            and s.percent(stable) == 100 - percent
        ),
    )
    lines.append(f"canary {version} {percent}%: {canary.describe()}")
    on_stage(f"canary {version} {percent}%", canary)

    stage(["rollback"])
    back = wait_for(
        reader,
        namespace,
        model,
        f"rollback: 100% on {stable}, the rebuild created",
        lambda s: (
            s.percent(stable) == 100 and s.latest_created not in (stable, canary.latest_created)
        ),
    )
    lines.append(f"rollback (pin 0%, restore): {back.describe()}")
    on_stage("rollback (pin 0%, restore)", back)

    stage(["rollback"])
    done = wait_for(
        reader,
        namespace,
        model,
        "rollback finished: 100% on the rebuilt stable revision",
        lambda s: s.latest_created == back.latest_created and s.percent(s.latest_created) == 100,
    )
    lines.append(f"rollback (finish): {done.describe()}")
    on_stage("rollback (finish)", done)
    return lines


def expected_version(repo: Repo, reg: Any, stable: str) -> str:
    """The newest registered version other than the stable one (the canary candidate)."""
    others = [v for v in reg.doc["versions"] if v != stable]
    if not others:
        raise CanaryError(f"registry {repo.rel(reg.path)}: no version besides {stable}")
    return sorted(others, key=lambda v: int(str(v).lstrip("v") or 0))[-1]
