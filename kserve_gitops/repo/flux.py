"""What Flux applies for each environment, read back from the repository.

`layers(repo, env)` follows the Kustomizations of the Flux entry point of `env` in `dependsOn`
order (render.flux_layers) and, for each layer, returns the Helm releases it declares (chart,
repository, version, values, target namespace) and the plain manifests it applies. The e2e
installs exactly that with the helm CLI; the consistency checks compare it with Argo CD and
versions.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve_gitops.repo import Repo, render
from kserve_gitops.repo.render import RenderError

FLUX_SOURCE_KINDS = ("GitRepository", "HelmRepository", "OCIRepository")
# Objects Flux controllers act on; everything else in a layer is a plain manifest.
FLUX_KINDS = {*FLUX_SOURCE_KINDS, "HelmRelease", "Kustomization"}


@dataclass(frozen=True)
class Release:
    """One Helm release, as `helm upgrade --install` would take it."""

    name: str
    namespace: str
    chart: str  # chart name in its repository, or ./charts/... in this repository
    repository: str  # https:// Helm repository, oci:// chart reference, or this Git repository
    version: str  # "" for our chart (its Chart.yaml version)
    values: dict[str, Any]
    # The repository files the values come from (relative to the checkout), in Flux's merge order.
    values_files: tuple[str, ...]
    depends_on: tuple[str, ...] = ()

    @property
    def values_file(self) -> str | None:
        """The file that has the last word (the environment's, where it has one)."""
        return self.values_files[-1] if self.values_files else None

    @property
    def local(self) -> bool:
        return self.chart.startswith("./")

    def helm_argv(self, repo: Repo) -> list[str]:
        """`helm upgrade --install` arguments that install this release by hand."""
        if self.local:
            ref = str(repo.root / self.chart)
        elif self.repository.startswith("oci://"):
            ref = self.repository
        else:
            ref = self.chart
        argv = ["upgrade", "--install", self.name, ref, "--namespace", self.namespace]
        argv += ["--create-namespace"]
        if not self.local and not self.repository.startswith("oci://"):
            argv += ["--repo", self.repository]
        if self.version:
            argv += ["--version", self.version]
        for values_file in self.values_files:
            argv += ["-f", str(repo.root / values_file)]
        return [*argv, "--wait", "--timeout", "10m"]


@dataclass(frozen=True)
class Layer:
    """One Flux Kustomization: what it applies, after which layers."""

    name: str
    path: str  # relative to the checkout
    depends_on: tuple[str, ...]
    releases: tuple[Release, ...]
    manifests: tuple[dict[str, Any], ...] = field(default=())  # plain objects (no Flux kinds)

    @property
    def manifests_path(self) -> str | None:
        """Where `kubectl apply -k` would apply this layer's plain manifests, if any."""
        return self.path if self.manifests else None


def _require(obj: dict[str, Any], dotted: str, where: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise RenderError(f"{where}: missing field {dotted}")
        cur = cur[part]
    return cur


def _generated_files(repo: Repo, kustomization_dir: Path) -> dict[str, str]:
    """configMapGenerator name -> the file it reads (relative to the checkout), in this
    kustomization and the directories it takes as resources (platform/<layer>: values every
    environment shares)."""
    kfile = kustomization_dir / "kustomization.yaml"
    data = render.load_yaml_file(repo, kfile) if kfile.is_file() else None
    found: dict[str, str] = {}
    for res in (data or {}).get("resources") or []:
        if (kustomization_dir / str(res)).is_dir():
            found |= _generated_files(repo, (kustomization_dir / str(res)).resolve())
    for gen in (data or {}).get("configMapGenerator") or []:
        for entry in gen.get("files") or []:
            source = str(entry).split("=", 1)[-1]
            found[gen["name"]] = repo.rel(kustomization_dir / source)
    return found


def _hashed(generator: str, ref: dict[str, Any]) -> tuple[str, ...]:
    name = str(ref.get("name", ""))
    suffix = name.removeprefix(f"{generator}-")
    return (name,) if suffix != name and "-" not in suffix else ()


def _source_repository(source: dict[str, Any], where: str) -> str:
    return str(_require(source, "spec.url", where))


def _release(
    hr: dict[str, Any],
    sources: dict[tuple[str, str], dict[str, Any]],
    config_maps: dict[str, dict[str, Any]],
    generated: dict[str, str],
    where: str,
) -> Release:
    name = hr["metadata"]["name"]
    spec = hr.get("spec") or {}
    here = f"{where}: HelmRelease/{name}"
    if "chartRef" in spec:
        ref = spec["chartRef"]
        source = sources.get((ref.get("kind", ""), ref.get("name", "")))
        if source is None:
            raise RenderError(f"{here}: spec.chartRef: no {ref.get('kind')}/{ref.get('name')}")
        repository = _source_repository(source, here)
        chart = repository.rstrip("/").rsplit("/", 1)[-1]
        version = str((source["spec"].get("ref") or {}).get("tag", ""))
    else:
        chart_spec = _require(spec, "chart.spec", here)
        chart = str(_require(chart_spec, "chart", here))
        src_ref = _require(chart_spec, "sourceRef", here)
        source = sources.get((src_ref.get("kind", ""), src_ref.get("name", "")))
        if source is None:
            raise RenderError(
                f"{here}: spec.chart.spec.sourceRef: no {src_ref.get('kind')}/{src_ref.get('name')}"
            )
        repository = _source_repository(source, here)
        version = str(chart_spec.get("version", ""))
    values: dict[str, Any] = {}
    values_files: list[str] = []
    for ref in spec.get("valuesFrom") or []:
        cm = config_maps.get(ref.get("name", ""))
        if ref.get("kind") == "ConfigMap" and cm is None and ref.get("optional"):
            continue  # Flux skips an optional ConfigMap that does not exist
        if ref.get("kind") != "ConfigMap" or cm is None:
            raise RenderError(f"{here}: spec.valuesFrom: no ConfigMap {ref.get('name')!r}")
        text = (cm.get("data") or {}).get(ref.get("valuesKey", "values.yaml"))
        if text is None:
            raise RenderError(f"{here}: ConfigMap {ref['name']} has no key values.yaml")
        # kustomize names a generated ConfigMap <generator name>-<content hash>.
        values_file = next(
            (f for gen, f in generated.items() if ref["name"] in (gen, *_hashed(gen, ref))), None
        )
        values_files += [values_file] if values_file else []
        origin = f"{here}: valuesFrom ConfigMap {ref['name']} ({values_file or 'inline'})"
        values.update(render.load_yaml_documents(text, origin)[0] if text.strip() else {})
    values.update(spec.get("values") or {})
    return Release(
        name=str(spec.get("releaseName", name)),
        namespace=str(spec.get("targetNamespace", hr["metadata"].get("namespace", "default"))),
        chart=chart,
        repository=repository,
        version=version,
        values=values,
        values_files=tuple(values_files),
        depends_on=tuple(d["name"] for d in spec.get("dependsOn") or []),
    )


def layers(repo: Repo, env: str) -> list[Layer]:
    """The layers Flux applies for `env` (render.flux_layers), in dependsOn order."""
    cluster_dir = render.flux_entry_point(repo, env)
    top = render.kustomize_build(repo, cluster_dir)
    built: dict[str, list[dict[str, Any]]] = {}
    sources: dict[tuple[str, str], dict[str, Any]] = {
        (o["kind"], o["metadata"]["name"]): o for o in top if o.get("kind") in FLUX_SOURCE_KINDS
    }
    refs = render.flux_layers(repo, env)
    for ref in refs:
        built[ref.name] = render.kustomize_build(repo, repo.root / ref.path)
        sources |= {
            (o["kind"], o["metadata"]["name"]): o
            for o in built[ref.name]
            if o.get("kind") in FLUX_SOURCE_KINDS
        }
    result: list[Layer] = []
    for ref in refs:
        objs = built[ref.name]
        config_maps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
        generated = _generated_files(repo, repo.root / ref.path)
        hrs = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "HelmRelease"}
        releases = {
            n: _release(hr, sources, config_maps, generated, ref.path) for n, hr in hrs.items()
        }
        local_deps = {n: tuple(d for d in r.depends_on if d in hrs) for n, r in releases.items()}
        order = render.dependency_order(local_deps, ref.path)
        plain = tuple(
            o
            for o in objs
            if o.get("kind") not in FLUX_KINDS
            and not (o.get("kind") == "ConfigMap" and o["metadata"]["name"] in _values_maps(hrs))
        )
        releases_in_order = tuple(releases[n] for n in order)
        result.append(Layer(ref.name, ref.path, ref.depends_on, releases_in_order, plain))
    return result


def _values_maps(hrs: dict[str, dict[str, Any]]) -> set[str]:
    return {
        ref.get("name", "")
        for hr in hrs.values()
        for ref in (hr.get("spec") or {}).get("valuesFrom") or []
    }
