"""The credential scan: gitleaks at the version versions.yaml pins (`secretScan.gitleaks`, built
from its Go module into the binaries cache like the kwok cluster's binaries), configured by
config/gitleaks.toml (gitleaks' default rules, extended; each allowlist entry with its reason).

`kgops policy` (and `make validate`) scans the work tree; the e2e scans its report folder before
it finishes and fails naming each file, line and rule (kserve_gitops.base.redact keeps them clean).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.base import redact
from kserve_gitops.localcluster import binaries
from kserve_gitops.repo import Repo

CONFIG = "config/gitleaks.toml"


class ScanError(Exception):
    """The scanner could not be built or run, or its configuration is wrong."""


@dataclass(frozen=True)
class Leak:
    file: str  # relative to the scanned folder
    line: int
    rule: str  # gitleaks' rule id (ours: credential-literal)
    description: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [gitleaks:{self.rule}] {self.description}"


def config(repo: Repo) -> Path:
    """config/gitleaks.toml of the checkout, checked: every allowlist entry (global or of a
    rule) says why in `description`."""
    path = repo.root / CONFIG
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScanError(f"{CONFIG}: {exc}") from exc
    entries: list[tuple[str, Any]] = [
        (f"allowlists[{i}]", e) for i, e in enumerate(data.get("allowlists") or [])
    ]
    for rule in data.get("rules") or []:
        entries += [
            (f"rules[{rule.get('id')}].allowlists[{i}]", e)
            for i, e in enumerate(rule.get("allowlists") or [])
        ]
    for where, entry in entries:
        if not isinstance(entry, dict) or not str(entry.get("description") or "").strip():
            raise ScanError(f"{CONFIG}: {where}: an allowlist entry needs its reason (description)")
    return path


def gitleaks(repo: Repo, echo: Callable[[str], None] | None = None) -> Path:
    """The pinned gitleaks binary, built into the cache when missing (a progress line says so)."""
    try:
        return binaries.ensure([binaries.secret_scanner(repo)], echo)["gitleaks"]
    except binaries.BuildError as exc:
        raise ScanError(f"gitleaks: {exc}") from exc


def scan(
    repo: Repo, folder: Path, echo: Callable[[str], None] | None = None, timeout_s: float = 600
) -> list[Leak]:
    """gitleaks over `folder` (a directory scan, not Git history) with the checkout's
    configuration; each finding with its file relative to `folder`."""
    cfg = config(repo)
    binary = gitleaks(repo, echo)
    with tempfile.TemporaryDirectory(prefix="kgops-gitleaks-") as tmp:
        report = Path(tmp) / "findings.json"
        # From inside the folder: paths are relative, so the allowlist's path patterns (`.cache`,
        # `.venv*`) never match where the folder itself lies.
        argv = [
            str(binary),
            "dir",
            ".",
            "--config",
            str(cfg),
            "--report-format",
            "json",
            "--report-path",
            str(report),
            "--redact",
            "--no-banner",
            "--exit-code",
            "0",
            "--log-level",
            "error",
            "--gitleaks-ignore-path",
            str(Path(tmp) / "none"),
        ]
        try:
            proc = subprocess.run(
                argv, cwd=folder, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScanError(f"gitleaks over {folder}: {exc}") from exc
        if proc.returncode != 0 or not report.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
            raise ScanError(f"gitleaks over {folder} exited {proc.returncode}:\n{tail}")
        findings = json.loads(report.read_text() or "[]")
    leaks = {
        Leak(
            str(f.get("File", "")).removeprefix("./"),
            int(f.get("StartLine") or 0),
            str(f.get("RuleID")),
            str(f.get("Description") or ""),
        )
        for f in findings
    }
    return sorted(leaks, key=lambda leak: (leak.file, leak.line, leak.rule))


def scan_report(repo: Repo, folder: Path, echo: Callable[[str], None]) -> str | None:
    """The e2e's last step: None when the report folder scans clean, else the failure naming
    every file, line and rule (the folder must not be published as it is)."""
    try:
        leaks = scan(repo, folder, echo)
    except ScanError as exc:
        return f"credential scan of the report: {exc}"
    binary = binaries.secret_scanner(repo)
    echo(
        f"credential scan of {repo.rel(folder)} (gitleaks {binary.version}, {CONFIG}): "
        f"{len(leaks)} finding(s)"
    )
    if not leaks:
        return None
    return f"{len(leaks)} credential(s) in the report folder {repo.rel(folder)}:\n" + "\n".join(
        f"  {leak}" for leak in leaks
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    """`kgops secret-scan [FOLDER...]`: gitleaks over each folder (default: the work tree), as
    CI runs it over reports/ before uploading them. Exit 0 clean, 1 findings, 2 no scan."""
    import argparse
    import sys

    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description="gitleaks over folders (default: the work tree)")
    parser.add_argument("folders", nargs="*", type=Path, help="default: the work tree")
    args = parser.parse_args(argv)
    found = 0
    for folder in args.folders or [repo.root]:
        if not folder.is_dir():
            print(f"{folder}: no such folder, nothing to scan")
            continue
        try:
            leaks = scan(repo, folder, lambda line: print(line, file=sys.stderr, flush=True))
        except ScanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for leak in leaks:
            print(
                f"{repo.rel(folder / leak.file)}:{leak.line}: [gitleaks:{leak.rule}] "
                f"{leak.description}",
                file=sys.stderr,
            )
        print(
            f"{repo.rel(folder)}: {len(leaks)} finding(s) (gitleaks "
            f"{binaries.secret_scanner(repo).version}, {CONFIG})"
        )
        found += len(leaks)
    return 1 if found else 0


def seal_report(
    repo: Repo,
    folder: Path,
    summary: dict[str, Any],
    failure: str | None,
    echo: Callable[[str], None],
) -> str | None:
    """Last, with every file of the report written: the scan of `folder`; a finding fails the
    run (summary.json rewritten), since the CI workflows upload the folder after this. The
    run's failure, with the findings added."""
    leaks = scan_report(repo, folder, echo)
    if not leaks:
        return failure
    failure = f"{failure}\n{leaks}" if failure else leaks
    summary |= {"result": "failed", "failure": failure}
    redact.write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    echo(f"FAILED {leaks}")
    return failure
