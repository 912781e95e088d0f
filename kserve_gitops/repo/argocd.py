"""The Argo CD Applications an environment's ApplicationSet generates, computed offline.

Expands `argocd/<env>` the way the ApplicationSet controller does for the subset we use:
list and matrix generators, Go templates (`{{ .field }}`, `if`/`else if`/`else`/`end`,
`eq`, `toJson`, `trimPrefix`) in `template` and `templatePatch`. Anything outside that subset
is an error naming the construct, so a template can't silently render differently here.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.repo import Repo, render
from kserve_gitops.repo.render import RenderError

WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


@dataclass(frozen=True)
class Application:
    """One generated Application, reduced to what it deploys and how it syncs."""

    name: str
    component: str
    layer: str
    wave: int
    namespace: str
    chart: str  # upstream chart name, ./charts/... for ours, "" for plain manifests
    repository: str
    version: str  # chart version, or the Git revision for sources in this repository
    path: str | None  # directory in this repository (our chart or a kustomize layer)
    value_files: tuple[str, ...]  # repository-relative paths of the helm valueFiles
    automated: bool
    sync_options: tuple[str, ...]
    spec: dict[str, Any]
    element: str = ""  # the generator element it comes from, as "<file>: element <name>"


def _lookup(params: dict[str, Any], ref: str, where: str) -> Any:
    cur: Any = params
    for part in ref.lstrip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise RenderError(f"{where}: template refers to {ref}, which the generator lacks")
        cur = cur[part]
    return cur


def _eval(expr: str, params: dict[str, Any], where: str) -> Any:
    words = re.findall(r'"[^"]*"|\S+', expr)
    args = words[1:]

    def val(word: str) -> Any:
        return json.loads(word) if word.startswith('"') else _lookup(params, word, where)

    if len(words) == 1 and words[0].startswith("."):
        return _lookup(params, words[0], where)
    if words[0] == "eq" and len(args) == 2:
        return val(args[0]) == val(args[1])
    if words[0] == "toJson" and len(args) == 1:
        return json.dumps(val(args[0]))
    if words[0] == "trimPrefix" and len(args) == 2:
        return str(val(args[1])).removeprefix(str(val(args[0])))
    raise RenderError(f"{where}: unsupported template expression {{{{ {expr} }}}}")


def render_template(text: str, params: dict[str, Any], where: str) -> str:
    """Render a Go template of the supported subset with `params`."""
    pieces: list[tuple[str, str]] = []  # ("text", s) or ("action", expr)
    pos = 0
    for m in _ACTION.finditer(text):
        chunk = text[pos : m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        pieces.append(("text", chunk))
        pieces.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", text[pos:]))
    out, i = _render_block(pieces, 0, params, where, emit=True)
    if i != len(pieces):
        raise RenderError(f"{where}: unbalanced {{{{ end }}}} in template")
    return out


def _render_block(
    pieces: list[tuple[str, str]], i: int, params: dict[str, Any], where: str, emit: bool
) -> tuple[str, int]:
    """Render until an unmatched else/end; return the text and the index of that piece."""
    out: list[str] = []
    while i < len(pieces):
        kind, value = pieces[i]
        if kind == "text":
            out.append(value if emit else "")
            i += 1
            continue
        if value == "end" or value == "else" or value.startswith("else if "):
            return "".join(out), i
        if value.startswith("if "):
            taken = False
            cond: str | None = value[3:]
            i += 1
            while True:
                hit = emit and not taken and (cond is None or bool(_eval(cond, params, where)))
                text, i = _render_block(pieces, i, params, where, emit=hit)
                out.append(text if hit else "")
                taken = taken or hit
                if i >= len(pieces):
                    raise RenderError(f"{where}: {{{{ if }}}} without {{{{ end }}}}")
                marker = pieces[i][1]
                i += 1
                if marker == "end":
                    break
                cond = None if marker == "else" else marker.removeprefix("else if ")
            continue
        out.append(str(_eval(value, params, where)) if emit else "")
        i += 1
    return "".join(out), i


def _render_tree(node: Any, params: dict[str, Any], where: str) -> Any:
    if isinstance(node, str):
        return render_template(node, params, where)
    if isinstance(node, list):
        return [_render_tree(n, params, where) for n in node]
    if isinstance(node, dict):
        return {k: _render_tree(v, params, where) for k, v in node.items()}
    return node


def _elements(generator: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "list" in generator:
        return [dict(e) for e in generator["list"].get("elements") or []]
    if "matrix" in generator:
        parts = [_elements(g, where) for g in generator["matrix"].get("generators") or []]
        return [
            {k: v for part in combo for k, v in part.items()} for combo in itertools.product(*parts)
        ]
    raise RenderError(f"{where}: unsupported generator {sorted(generator)}")


def _value_file(repo: Repo, spec_path: str | None, value_file: str) -> str:
    """A helm valueFile as a repository path: `$values/...` or relative to the chart path."""
    if value_file.startswith("$values/"):
        return value_file.removeprefix("$values/")
    return repo.rel((repo.root / (spec_path or "") / value_file).resolve())


def expand(appset: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The Applications an ApplicationSet generates (full manifests)."""
    spec = appset.get("spec") or {}
    if not spec.get("goTemplate"):
        raise RenderError(f"{where}: spec.goTemplate must be true (the templates use Go syntax)")
    apps = []
    for params in (p for g in spec.get("generators") or [] for p in _elements(g, where)):
        app = _render_tree(spec.get("template") or {}, params, where)
        if spec.get("templatePatch"):
            patch = yaml.safe_load(render_template(spec["templatePatch"], params, where))
            app = render.merged(app, patch or {})
        apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app})
    return apps


def _application(repo: Repo, app: dict[str, Any], where: str) -> Application:
    meta, spec = app.get("metadata") or {}, app.get("spec") or {}
    labels = meta.get("labels") or {}
    sources = spec.get("sources") or [spec.get("source") or {}]
    main = next((s for s in sources if "ref" not in s), {})
    helm = main.get("helm") or {}
    wave = (meta.get("annotations") or {}).get(WAVE_ANNOTATION)
    if wave is None:
        raise RenderError(f"{where}: Application {meta.get('name')}: no {WAVE_ANNOTATION}")
    policy = spec.get("syncPolicy") or {}
    return Application(
        name=str(meta.get("name")),
        component=str(labels.get("kserve-gitops/component", meta.get("name"))),
        layer=str(labels.get("kserve-gitops/layer", "")),
        wave=int(wave),
        namespace=str((spec.get("destination") or {}).get("namespace", "")),
        chart=str(main.get("chart") or (f"./{main['path']}" if "helm" in main else "")),
        repository=str(main.get("repoURL", "")),
        version=str(main.get("targetRevision", "")),
        path=main.get("path"),
        value_files=tuple(
            f
            for f in (_value_file(repo, main.get("path"), v) for v in helm.get("valueFiles") or [])
            # Argo CD skips a missing file only when told to (ignoreMissingValueFiles).
            if not helm.get("ignoreMissingValueFiles") or (repo.root / f).is_file()
        ),
        automated="automated" in policy,
        sync_options=tuple(policy.get("syncOptions") or []),
        spec=spec,
    )


def entry_point(repo: Repo, env: str) -> Path:
    """The directory a cluster of `env` applies to Argo CD (`kubectl apply -k`)."""
    path = repo.root / "argocd" / env
    if not (path / "kustomization.yaml").is_file():
        raise RenderError(f"{repo.rel(path)}/kustomization.yaml: no Argo CD entry point for {env}")
    return path


def generated(repo: Repo, env: str) -> list[dict[str, Any]]:
    """The Application manifests the ApplicationSets of `argocd/<env>` generate (for strict
    validation: the ApplicationSet CRD does not check its embedded template)."""
    env_dir = entry_point(repo, env)
    where = repo.rel(env_dir)
    appsets = [
        o for o in render.kustomize_build(repo, env_dir) if o.get("kind") == "ApplicationSet"
    ]
    if not appsets:
        raise RenderError(f"{where}: no ApplicationSet")
    return [a for s in appsets for a in expand(s, where)]


def _element_files(repo: Repo) -> dict[str, str]:
    """Element name -> the file under argocd/ whose ApplicationSet list generator declares it,
    so a disagreement names the line to edit rather than the rendered Application."""
    found: dict[str, str] = {}
    for path in sorted((repo.root / "argocd").rglob("*.yaml")):
        for doc in render.load_yaml_documents(path.read_text(), repo.rel(path)):
            if doc.get("kind") != "ApplicationSet":
                continue
            pending = list((doc.get("spec") or {}).get("generators") or [])
            while pending:
                gen = pending.pop()
                pending += (gen.get("matrix") or {}).get("generators") or []
                for element in (gen.get("list") or {}).get("elements") or []:
                    if "name" in element:
                        found.setdefault(str(element["name"]), repo.rel(path))
    return found


def applications(repo: Repo, env: str) -> list[Application]:
    """The Applications `argocd/<env>` generates, in sync-wave order."""
    files = _element_files(repo)
    apps = []
    for manifest in generated(repo, env):
        app = _application(repo, manifest, f"argocd/{env}")
        where = files.get(app.component, repo.rel(entry_point(repo, env)))
        apps.append(replace(app, element=f"{where}: element {app.component}"))
    return sorted(apps, key=lambda a: a.wave)  # stable: keeps generator order within a wave
