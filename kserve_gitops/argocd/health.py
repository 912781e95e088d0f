"""Argo CD's health verdict of one object, computed the way Argo CD computes it (util/lua of
argoproj/argo-cd): the kind's Lua check runs in a fresh Lua 5.1 state (gopher-lua is Lua 5.1;
here lupa.lua51) with the object as the global `obj`, every JSON number a float, and only the
libraries Argo CD opens (os reduced to time and date, no io). The returned table's status and
message are the verdict; a status Argo CD does not know, or a script error, is Unknown, as Argo
CD shows it.

`customized=True` uses the check argocd/base/argocd-cm.yaml declares for the kind when it
declares one (Argo CD prefers argocd-cm's over its built-in ones), else the upstream check."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import yaml

from kserve_gitops.argocd import sources
from kserve_gitops.repo import Repo, RepoError

CONFIGMAP = Path("argocd") / "base" / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.{group}_{kind}"
# health.HealthStatusCode of gitops-engine; anything else is Argo CD's invalidHealthStatus.
STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
INVALID_STATUS = "Lua returned an invalid health status"

# Argo CD's sandbox: base, package, table, string, math, coroutine; `require("os")` gives
# time and date only. lupa opens every library and adds `python`: take away the rest.
_SANDBOX = """
local time, date = os.time, os.date
python, io, debug, os, dofile, loadfile = nil, nil, nil, nil, nil, nil
package.loaded.io, package.loaded.debug, package.loaded.os, package.loaded.python = nil
package.preload.os = function() return {time = time, date = date} end
"""


class HealthCheckError(Exception):
    """No health check for a kind, or an unreadable argocd-cm."""


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


def group_kind(obj: dict[str, Any]) -> tuple[str, str]:
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    return group, str(obj.get("kind", ""))


def _lua_value(value: Any) -> Any:
    """JSON as Argo CD hands it to Lua: numbers as floats, null dropped."""
    if isinstance(value, dict):
        return {k: _lua_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_lua_value(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def run(script: str, obj: dict[str, Any]) -> Verdict:
    """The verdict of the Lua health check `script` on `obj`."""
    runtime = lua.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_SANDBOX)
    runtime.globals().obj = runtime.table_from(_lua_value(obj), recursive=True)
    try:
        result = runtime.execute(script)
    except lua.LuaError as exc:
        return Verdict("Unknown", str(exc))
    if lua.lua_type(result) != "table":
        # lupa hands Lua's scalars over as Python values: name their Lua type as Argo CD does.
        names = {bool: "boolean", str: "string", int: "number", float: "number"}
        got = names.get(type(result), lua.lua_type(result) or "nil")
        return Verdict("Unknown", f"expect table output from Lua script, not {got}")
    status, message = result["status"], result["message"]
    if status not in STATUSES:
        return Verdict("Unknown", INVALID_STATUS)
    return Verdict(str(status), "" if message is None else str(message))


@lru_cache
def _upstream(root: Path, group: str, kind: str) -> str | None:
    path = sources.ensure(Repo(root)) / group / kind / "health.lua"
    return path.read_text() if path.is_file() else None


@lru_cache
def _customized(root: Path) -> dict[str, str]:
    path = root / CONFIGMAP
    try:
        doc = yaml.safe_load(path.read_text())
        return dict(doc["data"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise HealthCheckError(f"{CONFIGMAP}: expected a ConfigMap with data ({exc})") from None


def script(group: str, kind: str, customized: bool = False, repo: Repo | None = None) -> str:
    """The Lua health check Argo CD runs for group/kind: upstream, or ours when `customized`."""
    root = (repo or Repo.discover()).root
    if customized and (ours := _customized(root).get(HEALTH_KEY.format(group=group, kind=kind))):
        return ours
    upstream = _upstream(root, group, kind)
    if upstream is None:
        raise HealthCheckError(f"Argo CD has no Lua health check for {group}/{kind}")
    return upstream


def evaluate(obj: dict[str, Any], customized: bool = False, repo: Repo | None = None) -> Verdict:
    """Argo CD's verdict on `obj` (a live object as the API returns it): the upstream check at
    versions.yaml argocd.version, or with `customized` the one argocd-cm declares."""
    try:
        return run(script(*group_kind(obj), customized=customized, repo=repo), obj)
    except RepoError as exc:
        raise HealthCheckError(str(exc)) from None
