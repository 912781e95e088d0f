"""No credential in the repository: none in a container's environment or a Secret object
(they come from a Secret delivered out of band), none in any file (the scan `kgops policy` and
`make validate` run over the checkout, with an allowlist that names file, rule and reason)."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.checks.pods import each_container
from kserve_gitops.checks.rules import Context, Problems, Violation
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError

# Environment variable names that carry a credential: only valueFrom (a Secret) is acceptable.
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY)")


def check_credentials_by_reference(obj: dict[str, Any], _ctx: Context) -> Problems:
    for path, c, _pod in each_container(obj):
        for i, env in enumerate(c.get("env") or []):
            if SECRET_ENV.search(str(env.get("name", "")).upper()) and "value" in env:
                yield (
                    f"{path}.env.{i}.value",
                    f"{env.get('name')} is a credential: use valueFrom.secretKeyRef "
                    "(or a service account), never a literal value",
                )


def check_secret_objects(obj: dict[str, Any], _ctx: Context) -> Problems:
    for key in ("data", "stringData"):
        for name in obj.get(key) or {}:
            if SECRET_ENV.search(name.upper()) or name.lower() in ("password", "token", "key"):
                yield (
                    f"{key}.{name}",
                    "credential committed in a Secret: deliver it out of band (sealed or "
                    "external secret) and reference it",
                )


# --- the scan of every file ----------------------------------------------------------------------

SCAN_SKIP_DIRS = {
    ".git",
    ".venv",
    ".venv-mlserver",
    ".cache",
    "reports",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
}
SCAN_SKIP_SUFFIXES = {".joblib", ".png", ".pkl", ".whl", ".gz", ".zip"}
ALLOWLIST = "config/secret-scan-allowlist.yaml"
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS-ACCESS-KEY", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("PRIVATE-KEY", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    ("GITHUB-TOKEN", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("SLACK-TOKEN", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),
)
# A credential-named key with a literal value, in configuration files (YAML, JSON, env, ini).
CONFIG_SUFFIXES = {".yaml", ".yml", ".json", ".env", ".ini", ".cfg", ".toml", ".properties"}
_KEYED = re.compile(
    r"""(?ix)["']?(password|passwd|secret|secret[_-]?access[_-]?key|api[_-]?key|token
    |auth[_-]?token|client[_-]?secret)["']?\s*[:=]\s*["']?([^\s"'#,}]*)"""
)
# Values that point at a secret rather than being one; `{`/`[` open a mapping or list (a JSON
# object keyed "token", such as a schema's property), not a literal.
_REFERENCE = re.compile(r"^(\$|\{|\[|<|secretKeyRef|valueFrom|null$|none$|true$|false$|$)", re.I)


def _allowlist(repo: Repo) -> list[dict[str, str]]:
    path = repo.root / ALLOWLIST
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("allow") or []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"path", "rule", "reason"} <= e.keys():
            raise RenderError(f"{ALLOWLIST}: allow.{i}: expected path, rule and reason")
    return entries


def _scanned_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SCAN_SKIP_DIRS]
        found += [Path(folder, n) for n in names if Path(n).suffix not in SCAN_SKIP_SUFFIXES]
    return sorted(p for p in found if p.is_file())


def scan_repository(repo: Repo) -> list[Violation]:
    """Every file of the checkout (not the virtualenv, caches or reports) against the credential
    patterns; a finding is dropped when an allowlist entry names its file (glob) and rule."""
    allow = _allowlist(repo)
    out: list[Violation] = []
    for path in _scanned_files(repo.root):
        rel = path.relative_to(repo.root)
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            found = [rule for rule, pattern in SECRET_PATTERNS if pattern.search(line)]
            if path.suffix in CONFIG_SUFFIXES:
                for match in _KEYED.finditer(line):
                    if not _REFERENCE.match(match.group(2)):
                        found.append("KEYED-LITERAL")
            for rule in found:
                if any(e["rule"] == rule and fnmatch.fnmatch(str(rel), e["path"]) for e in allow):
                    continue
                out.append(Violation(rule, f"{rel}:{lineno}", "line", "looks like a credential"))
    return out
