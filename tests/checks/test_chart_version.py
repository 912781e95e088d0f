"""The CI rule that a changed chart bumps its version, on a real throwaway git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kserve_gitops.checks.chart_version import unbumped
from kserve_gitops.repo import Repo


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "r"
    (root / "charts/demo/templates").mkdir(parents=True)
    (root / "charts/demo/Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (root / "charts/demo/templates/cm.yaml").write_text("kind: ConfigMap\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    _git(root, "tag", "base")
    return root


def _commit(root: Path) -> None:
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "change")


def test_template_change_without_bump_is_reported(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "charts/demo/templates/cm.yaml").write_text("kind: ConfigMap\ndata: {}\n")
    _commit(root)
    [problem] = unbumped(Repo(root), "base")
    assert problem.startswith("charts/demo/Chart.yaml: version:") and "0.1.0" in problem


def test_change_with_bump_passes(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "charts/demo/templates/cm.yaml").write_text("kind: ConfigMap\ndata: {}\n")
    (root / "charts/demo/Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.1\n")
    _commit(root)
    assert unbumped(Repo(root), "base") == []


def test_unrelated_change_needs_no_bump(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "README.md").write_text("docs\n")
    _git(root, "add", "README.md")
    _commit(root)
    assert unbumped(Repo(root), "base") == []
