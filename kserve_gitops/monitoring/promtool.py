"""Prometheus' own rule checker: `promtool check rules` and `promtool test rules`.

No PromQL parser is packaged for Python, so the rule expressions and dashboard queries are
proven by the real Prometheus code. Debian ships it: `apt-get install -y prometheus`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.repo import Repo

INSTALL_HINT = "run `make promtool` (Debian's prometheus package) or set PROMTOOL to its path"


class PromtoolError(RuntimeError):
    """promtool is missing or could not be run."""


def find(repo: Repo) -> str | None:
    """$PROMTOOL, else promtool on PATH, else the one `make promtool` extracts, else None."""
    explicit = os.environ.get("PROMTOOL")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    local = repo.cache / "bin" / "promtool"
    return shutil.which("promtool") or (str(local) if local.is_file() else None)


def require(repo: Repo) -> str:
    found = find(repo)
    if not found:
        raise PromtoolError(f"promtool not found: {INSTALL_HINT}")
    return found


def run(repo: Repo, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with `args`; the caller reads returncode and output."""
    return subprocess.run(
        [require(repo), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def check_rule_groups(repo: Repo, groups: list[dict[str, Any]]) -> tuple[bool, str]:
    """`promtool check rules` on the groups (the `spec.groups` of a PrometheusRule): every
    expression parses, names and labels are valid. Returns (ok, promtool's output)."""
    with tempfile.TemporaryDirectory(prefix="kgops-promtool-") as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        proc = run(repo, "check", "rules", str(rules))
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def test_rule_groups(
    repo: Repo,
    groups: list[dict[str, Any]],
    tests: list[dict[str, Any]],
    evaluation_interval: str = "1m",
) -> tuple[bool, str]:
    """`promtool test rules`: input series are evaluated by Prometheus' rule engine and the
    expected alerts (and recorded samples) compared. Returns (ok, promtool's output)."""
    with tempfile.TemporaryDirectory(prefix="kgops-promtool-") as tmp:
        Path(tmp, "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        spec = {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": evaluation_interval,
            "tests": tests,
        }
        Path(tmp, "tests.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        proc = run(repo, "test", "rules", "tests.yaml", cwd=Path(tmp))
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def check_queries(repo: Repo, queries: dict[str, str]) -> tuple[bool, str]:
    """Each query parses: promtool has no expression checker, so every query becomes the
    expression of a throwaway recording rule named after it."""
    rules = [
        {"record": f"check:query_{i}", "expr": expr, "labels": {"query": name[:60]}}
        for i, (name, expr) in enumerate(sorted(queries.items()))
    ]
    return check_rule_groups(repo, [{"name": "queries", "rules": rules}])
