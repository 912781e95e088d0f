"""The values files this repository passes to upstream charts, checked against the charts
themselves (from the chart cache, charts.py), the way Helm installs them:

- against the chart's `values.schema.json` when it ships one (Helm refuses the install);
- rendered with the Helm SDK under the release name, namespace and Kubernetes version they are
  installed with, so that every object they produce is validated strictly (validate.py);
- for values with no effect: a key whose value is not the chart's default, yet the chart
  renders exactly the same without it (a typo, a wrong nesting, a key the chart ignores).

Renders are memoised per run, and each release's result is kept in .cache/upstream-values/
under a digest of everything it depends on: an unchanged release costs no render next run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.repo import Repo, files, flux, render
from kserve_gitops.repo.render import Obj, RenderError
from kserve_gitops.upstream import charts, istio_values, kube_schemas
from kserve_gitops.upstream.charts import ChartRef

# Helm's releaseutil.SplitManifests: a document separator may be followed by text on its line
# (cert-manager's rbac.yaml has `---# comment`), which a YAML parser refuses.
_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")
# One finding in a Helm values-schema error: `- at '/json/pointer': message`.
_SCHEMA_FINDING = re.compile(r"^\s*- at '([^']*)': (.*)$")
_UNKNOWN_KEYS = re.compile(r"additional propert(?:y|ies) (.+) not allowed")
_MISSING = object()
# Istio's charts keep their defaults under this key and merge them into .Values in their
# templates (zzz_profile.yaml): for those charts, these are the defaults a user restates.
_ISTIO_DEFAULTS = "_internal_defaults_do_not_set"


@dataclass(frozen=True)
class Install:
    """One upstream release of an environment, with the values Flux and Argo CD pass to it."""

    name: str
    namespace: str
    ref: ChartRef
    values: dict[str, Any]
    source: str  # the values file (repository path), or the HelmRelease for inline values


@dataclass
class Outcome:
    """What the upstream releases render, and what is wrong with their values."""

    objects: list[Obj] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Charts absent from the cache, their checks not run: "chart version" -> how to get it.
    missing: dict[str, str] = field(default_factory=dict)
    crd_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)


def installs(repo: Repo, env: str) -> list[Install]:
    """The upstream chart releases Flux installs in `env` (Argo CD passes the same files:
    install_plan.differences checks it), in install order."""
    return [
        Install(
            r.name,
            r.namespace,
            ChartRef(r.chart, r.version, r.repository),
            r.values,
            r.values_file or f"HelmRelease/{r.name} ({layer.path})",
        )
        for layer in flux.layers(repo, env)
        for r in layer.releases
        if not r.local
    ]


@cache
def _render(
    chart_dir: Path, values_json: str, name: str, namespace: str, kube: str
) -> dict[str, str] | str:
    """template -> rendered text, or Helm's error message (memoised for the run)."""
    import helm_python as helm
    from helm_python import _native

    options = {"name": name, "namespace": namespace, "is_install": True, "kube_version": kube}
    try:
        with helm.Chart.load(chart_dir) as chart:
            # Chart.render has no kube_version; the SDK's render call takes one (helm-python-sdk
            # is pinned). Without it charts see the SDK's own Kubernetes version, not the cluster's.
            raw = _native.call_string("helm_render", chart._raw(), values_json, json.dumps(options))
    except helm.HelmError as exc:
        return str(exc).strip()
    rendered: dict[str, str] = json.loads(raw)
    # NOTES.txt is printed to the user, never applied: it is not part of what the chart renders.
    return {k: v for k, v in rendered.items() if not k.endswith("NOTES.txt")}


def _render_with(
    install: Install, chart_dir: Path, values: dict[str, Any], kube: str
) -> dict[str, str] | str:
    return _render(
        chart_dir, json.dumps(values, sort_keys=True), install.name, install.namespace, kube
    )


@cache
def _chart_info(chart_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any], tuple[str, ...]]:
    """The chart's values schema (None without one), default values and crds/ files."""
    import helm_python as helm

    with helm.Chart.load(chart_dir) as chart:
        schema, defaults, crds = chart.schema, chart.values, tuple(c["data"] for c in chart.crds)
    internal = defaults.pop(_ISTIO_DEFAULTS, None)
    if isinstance(internal, dict):
        defaults = render.merged(internal, defaults)
    # istiod and cni copy `.pilot` / `.cni` to the top (zzy_descope_legacy.yaml): the default of
    # `pilot.replicaCount` is the top-level `replicaCount`.
    for sub in istio_values.descoped(chart_dir):
        top = {k: v for k, v in defaults.items() if k != sub}
        defaults[sub] = render.merged(top, defaults.get(sub) or {})
    return schema, defaults, crds


def _is_default(value: Any, default: Any) -> bool:
    """Whether `value` restates the default: a mapping does when each of its keys does."""
    if isinstance(value, dict) and isinstance(default, dict):
        return all(_is_default(v, default.get(k, _MISSING)) for k, v in value.items())
    return value == default


def _dotted(path: tuple[str, ...] | list[str]) -> str:
    """A key path as users write it: a.b.c, keys with dots quoted (podAnnotations."a.b/c")."""
    return ".".join(f'"{k}"' if "." in k else k for k in path) or "(root)"


def _schema_findings(message: str) -> list[tuple[str, str]]:
    """(key path, reason) per finding of a Helm values-schema error."""
    found: list[tuple[str, str]] = []
    for line in message.splitlines():
        match = _SCHEMA_FINDING.match(line)
        if not match or match.group(2) == "validation failed":
            continue
        pointer, reason = match.groups()
        path = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        unknown = _UNKNOWN_KEYS.fullmatch(reason)
        if unknown:
            keys = re.findall(r"'([^']*)'", unknown.group(1))
            found += [(_dotted([*path, k]), "unknown key, refused") for k in keys]
        else:
            found.append((_dotted(path), reason))
    return found or [("(root)", message.strip())]


@cache
def _parsed(text: str) -> tuple[Any, ...]:
    """The documents of one rendered template, split as Helm splits them (parsed once per run:
    environments share most renders, and the CRD charts are megabytes of YAML)."""
    docs = (yaml.load(d, Loader=yaml.CSafeLoader) for d in _SEPARATOR.split(text) if d.strip())
    return tuple(d for d in docs if d is not None)


def _objects(rendered: dict[str, str], crds: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(template, body) of every object Helm would apply: crds/ files first, then templates."""
    sources = [("crds/", text) for text in crds] + sorted(rendered.items())
    return [(template, body) for template, text in sources for body in _parsed(text)]


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def _without(values: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(values)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _inert(doc: Any) -> bool:
    """A ConfigMap the chart itself declares inert: istiod's `values` ConfigMap, a copy of every
    value "rendered for debugging purposes and external tooling; modifying these values has no
    effect" (its kubernetes.io/description)."""
    if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
        return False
    notes = (doc.get("metadata") or {}).get("annotations") or {}
    return "modifying these values has no effect" in str(notes.get("kubernetes.io/description"))


def _comparable(rendered: dict[str, str] | str) -> Any:
    """What the no-effect check compares: the rendered templates, with the data of inert
    ConfigMaps left out, so that a value only such a copy holds counts as having no effect."""
    if isinstance(rendered, str):
        return rendered
    out: dict[str, Any] = {}
    for template, text in rendered.items():
        if "has no effect" not in text:
            out[template] = text
            continue
        docs = [dict(d) if isinstance(d, dict) else d for d in _parsed(text)]
        out[template] = [{**d, "data": None} if _inert(d) else d for d in docs]
    return out


def no_effect(
    install: Install,
    chart_dir: Path,
    defaults: dict[str, Any],
    baseline: dict[str, str],
    kube: str,
) -> list[tuple[str, Any]]:
    """(key path, value) of every value that is not the chart's default and yet changes
    nothing the chart renders. A mapping the chart has no default for (a typo'd or misplaced
    key) is reported whole; within a known one, the keys are named one by one."""
    found: list[tuple[str, Any]] = []
    base = _comparable(baseline)

    def walk(prefix: tuple[str, ...]) -> None:
        for key, value in _lookup(install.values, prefix).items():
            path = (*prefix, key)
            default = _lookup(defaults, path)
            if _is_default(value, default):
                continue  # restating the default is harmless
            without = _render_with(install, chart_dir, _without(install.values, path), kube)
            unused = _comparable(without) == base
            if isinstance(value, dict) and (isinstance(default, dict) or not unused):
                walk(path)
            elif unused:
                found.append((_dotted(path), value))

    walk(())
    return found


def _check(
    install: Install, chart_dir: Path, kube: str, istio: dict[str, Any] | None = None
) -> tuple[list[tuple[str, Any]], list[str]]:
    """(template, body) of what the release renders, and the problems of its values (`istio`:
    Istio's typed values schema, for an Istio chart without a values.schema.json)."""
    import helm_python as helm

    schema, defaults, crds = _chart_info(chart_dir)
    where = f"{install.source} (values of {install.ref}, release {install.name})"
    typed: list[str] = []
    if schema is None and istio is not None:
        # Helm installs these values whatever they hold (istiod copies them all into a
        # ConfigMap): Istio's own values API is what names a typo or a wrong type.
        typed = [
            f"{where}: {_dotted(path)}: {reason}"
            for path, reason in istio_values.problems(istio, chart_dir, install.values)
        ]
    if schema is not None:
        with helm.Chart.load(chart_dir) as chart:
            try:
                chart.validate_schema(install.values)
            except helm.HelmValuesError as exc:
                # Helm refuses the install: nothing is rendered, so nothing more to check.
                return [], [
                    f"{where}: {path}: {reason} (the chart's values.schema.json)"
                    for path, reason in _schema_findings(str(exc))
                ]
    rendered = _render_with(install, chart_dir, install.values, kube)
    if isinstance(rendered, str):
        return [], [*typed, f"{where}: the chart does not render: {rendered}"]
    try:
        objects = _objects(rendered, crds)
    except yaml.YAMLError as exc:
        return [], [*typed, f"{where}: the chart renders malformed YAML: {exc}"]
    return objects, typed + [
        f"{where}: {path}: {json.dumps(value)} has no effect: the chart renders the same "
        "without it and it is not the chart's default (a typo, a wrong nesting, or a key "
        "the chart ignores)"
        for path, value in no_effect(install, chart_dir, defaults, rendered, kube)
    ]


@cache
def _code_version() -> str:
    import helm_python as helm

    modules = (sys.modules[__name__], istio_values)
    code = b"".join(Path(m.__file__ or "").read_bytes() for m in modules)
    return f"{hashlib.sha256(code).hexdigest()} helm-python {helm.__version__}"


def check_install(
    repo: Repo, install: Install, chart_dir: Path
) -> tuple[list[tuple[str, Any]], list[str]]:
    """(template, body) of every object the release renders, and the problems of its values.
    The result is kept in .cache/upstream-values/, one file per release and values file, with
    a digest of all it depends on (this code, the chart's files, the release and its values):
    while that digest holds, the release does not render again."""
    kube = f"v{repo.kubernetes_version}"  # the cluster's, which the charts render for
    istio: dict[str, Any] | None = None
    if istio_values.is_istio_chart(repo, install.ref.chart, install.ref.version):
        try:
            istio = istio_values.load(repo)
        except istio_values.IstioValuesError as exc:
            return [], [f"{install.source} (values of {install.ref}): {exc}"]
    inputs = [
        _code_version(),
        istio_values.digest(istio),
        charts.files_sha256(chart_dir),
        kube,
        install.name,
        install.namespace,
        install.source,
        str(install.ref),
        install.values,
    ]
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    slot = hashlib.sha256(f"{install.source}\0{install.name}".encode()).hexdigest()[:24]
    stored = repo.cache / "upstream-values" / f"{slot}.json"
    try:
        result = json.loads(stored.read_text())
        if result["inputs"] == digest:
            return result["objects"], result["problems"]
    except (OSError, ValueError, KeyError):
        pass  # not kept yet, or unreadable: render
    objects, problems = _check(install, chart_dir, kube, istio)
    result = {"inputs": digest, "objects": objects, "problems": problems}
    files.write_text(stored, json.dumps(result))
    return objects, problems


def check_environments(repo: Repo, envs: list[str]) -> Outcome:
    """Every upstream release of `envs`, from the chart cache (never pulled here: a chart not
    cached is listed in `missing`, its checks not run). An object that several releases render
    identically (most, across environments) is listed once, naming every values file behind it."""
    outcome = Outcome()
    rendered: dict[str, tuple[list[str], str, Any]] = {}
    located: dict[ChartRef, Path | charts.ChartError] = {}
    for env in envs:
        try:
            releases = installs(repo, env)
        except RenderError as exc:
            outcome.problems.append(str(exc))
            continue
        for install in releases:
            if install.ref not in located:  # each chart verified once per run
                try:
                    located[install.ref] = charts.ensure(repo, install.ref, online=False)
                except charts.ChartError as exc:
                    located[install.ref] = exc
            chart_dir = located[install.ref]
            if isinstance(chart_dir, charts.ChartMissing):
                outcome.missing[str(install.ref)] = str(chart_dir)
                continue
            if isinstance(chart_dir, charts.ChartError):
                if str(chart_dir) not in outcome.problems:
                    outcome.problems.append(str(chart_dir))
                continue
            objects, problems = check_install(repo, install, chart_dir)
            outcome.problems += problems
            for template, body in objects:
                key = json.dumps(body, sort_keys=True)
                sources = rendered.setdefault(key, ([], template, body))[0]
                if install.source not in sources:
                    sources.append(install.source)
    outcome.objects = [Obj(f"{', '.join(s)} -> {t}", body) for s, t, body in rendered.values()]
    # Custom resources a chart renders may have their CRD from another chart (cert-manager's
    # Certificate in kserve-resources): the CRDs these releases install define their schemas.
    outcome.crd_schemas = kube_schemas.crd_schemas_in(o.body for o in outcome.objects)
    return outcome
