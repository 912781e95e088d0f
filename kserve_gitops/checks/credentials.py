"""No credential in the repository: none in a container's environment or a Secret object
(they come from a Secret delivered out of band), none in any file (gitleaks over the checkout,
run by `kgops policy` and `make validate`: kserve_gitops.checks.secret_scan, config/gitleaks.toml).

The two object rules stay ours because gitleaks cannot make them: they read rendered objects,
not files (a chart's template holds no value; the environment's values file fills it in), and
they refuse any literal, whatever its entropy (`password: changeme` in a Secret's stringData, an
`API_TOKEN` env var with `value: x`), where gitleaks' generic rules look for random-looking
strings. Every pattern that matches text (keys, tokens, `password: <literal>` in configuration
files) is gitleaks' or a rule of config/gitleaks.toml."""

from __future__ import annotations

from typing import Any

from kserve_gitops.base.redact import CREDENTIAL_NAME
from kserve_gitops.checks import secret_scan
from kserve_gitops.checks.pods import each_container
from kserve_gitops.checks.rules import Context, Problems, Violation
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError

# Environment variable names that carry a credential: only valueFrom (a Secret) is acceptable.
# The same names the harness redacts from what it writes (kserve_gitops.base.redact).
SECRET_ENV = CREDENTIAL_NAME


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


def scan_repository(repo: Repo) -> list[Violation]:
    """gitleaks over the work tree (kserve_gitops.checks.secret_scan; config/gitleaks.toml
    leaves out the virtualenvs, .cache, .git and Python's caches): a violation per finding,
    with file and line."""
    try:
        leaks = secret_scan.scan(repo, repo.root)
    except secret_scan.ScanError as exc:
        raise RenderError(str(exc)) from exc
    return [
        Violation(f"gitleaks:{leak.rule}", f"{leak.file}:{leak.line}", "line", leak.description)
        for leak in leaks
    ]
