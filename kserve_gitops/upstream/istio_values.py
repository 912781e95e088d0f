"""Istio's typed Helm values, as the values check of `make validate` applies them to the Istio
charts, which ship no values.schema.json (base, istiod, cni; the gateway chart has its own).

istioctl reads values into the protobuf message `istio.operator.v1alpha1.Values` (istio.io/istio
operator/pkg/apis). build/istio-values prints that message as a JSON Schema (unknown keys refused
as protojson's strict unmarshalling refuses them, field types kept); `kgops istio-values` builds it
from the istio.io/istio version versions.yaml pins (`istio.valuesApi`, built and cached like the
kwok binaries) and writes the committed `config/istio-values.schema.json`, which records the Istio
and module versions it was made for: a bump of either makes it stale, and the check says so.

    kgops istio-values          # regenerate config/istio-values.schema.json (Go, module proxy)
    kgops istio-values --check  # fail if it is not what the pinned module gives

How a chart's values meet the message:
- istiod and cni copy a sub-message to the top (templates/zzy_descope_legacy.yaml: `.pilot`,
  `.cni`), so their top level takes that message's fields beside Values' own;
- the typed Values lags the charts: keys a chart's own values.yaml declares that Values does
  not know (istiod's `pdb`, cni's `ambient.enablementSelectors`, ...) are accepted as declared;
- ztunnel's own values are untyped in the API (`Values.ztunnel` is a google.protobuf.Value):
  beside Values' top level (profile, global, ...), its keys are the ones its values.yaml declares.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kserve_gitops.repo import Repo, generated

ROOT = "istio.operator.v1alpha1.Values"
META = "x-kgops"
# Where a chart copies a sub-message of Values to its top level.
_DESCOPE = re.compile(r'index \$\.Values "(\w+)"')
_ISTIO_DEFAULTS = "_internal_defaults_do_not_set"


class IstioValuesError(Exception):
    """The schema could not be built, or the committed one is missing or stale."""


def schema_file(repo: Repo) -> Path:
    return repo.config / "istio-values.schema.json"


def pins(repo: Repo) -> dict[str, str]:
    istio = repo.versions.get("istio") or {}
    if not istio.get("valuesApi"):
        raise IstioValuesError(f"{repo.rel(repo.versions_file)}: istio.valuesApi: no version")
    return {"istio": str(istio["version"]), "valuesApi": str(istio["valuesApi"])}


def binary(repo: Repo) -> Any:
    from kserve_gitops.localcluster import binaries

    return binaries.Binary(
        "istio-values",
        pins(repo)["valuesApi"],
        "kserve-gitops/build/istio-values",
        "istio-values",
        source=repo.root / "build" / "istio-values",
    )


def produce(repo: Repo) -> dict[Path, str]:
    """The committed schema as build/istio-values prints it for the pinned module version."""
    from kserve_gitops.localcluster import binaries

    try:
        path = binaries.ensure([binary(repo)])["istio-values"]
    except binaries.BuildError as exc:
        raise IstioValuesError(str(exc)) from exc
    proc = subprocess.run([str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise IstioValuesError(f"{path}: exited {proc.returncode}: {proc.stderr.strip()}")
    schema = json.loads(proc.stdout)
    schema[META] = {
        **pins(repo),
        "module": "istio.io/istio",
        "source": "operator/pkg/apis/values_types.proto, message Values (build/istio-values)",
    }
    return {schema_file(repo): json.dumps(schema, indent=1, sort_keys=True) + "\n"}


@cache
def _load(path: Path, mtime: float) -> dict[str, Any]:
    del mtime  # part of the cache key only
    return dict(json.loads(path.read_text()))


def load(repo: Repo) -> dict[str, Any]:
    """The committed schema; IstioValuesError when it is missing or made for other pins."""
    path = schema_file(repo)
    try:
        schema = _load(path, path.stat().st_mtime)
    except (OSError, ValueError) as exc:
        raise IstioValuesError(
            f"{repo.rel(path)}: no readable Istio values schema ({exc}); run `kgops istio-values`"
        ) from exc
    want = pins(repo)
    got = {k: schema.get(META, {}).get(k) for k in want}
    if got != want:
        raise IstioValuesError(
            f"{repo.rel(path)}: made for Istio {got['istio']} (istio.io/istio "
            f"{got['valuesApi']}), versions.yaml pins {want['istio']} ({want['valuesApi']}): "
            "run `kgops istio-values`"
        )
    return schema


def digest(schema: dict[str, Any] | None) -> str:
    """What the values check depends on of the schema (part of its cache key)."""
    if schema is None:
        return ""
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def is_istio_chart(repo: Repo, chart: str, version: str) -> bool:
    istio = repo.versions.get("istio") or {}
    return chart in (istio.get("charts") or []) and version == str(istio.get("version"))


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else node


def _declare(node: dict[str, Any], declared: Any, defs: dict[str, Any]) -> None:
    """Accept in `node` (an object schema) every key `declared` (the chart's defaults) has."""
    props = node.get("properties")
    if not isinstance(declared, dict) or props is None:
        return
    for key, value in declared.items():
        if key not in props:
            props[key] = {}  # the chart declares it; the typed API does not know it
        elif isinstance(value, dict) and value:
            target = _resolve(props[key], defs)
            if target.get("properties") is not None:
                if "$ref" in props[key]:  # a copy of its own, widened for this chart only
                    props[key] = copy.deepcopy(target)
                    target = props[key]
                _declare(target, value, defs)


def descoped(chart_dir: Path) -> list[str]:
    """The sub-messages of Values an Istio chart copies to its top level (`pilot`, `cni`)."""
    descope = chart_dir / "templates" / "zzy_descope_legacy.yaml"
    return _DESCOPE.findall(descope.read_text()) if descope.is_file() else []


def chart_schema(schema: dict[str, Any], chart_dir: Path) -> dict[str, Any]:
    """The schema the values of the Istio chart at `chart_dir` are checked with."""
    defs = copy.deepcopy(schema["definitions"])
    values_msg = defs[ROOT]
    defaults = (yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}).get(
        _ISTIO_DEFAULTS
    ) or {}
    # Values' own top level (profile, global, revision, ... which every chart's zzz_profile.yaml
    # reads), and the fields of the sub-message the chart copies to the top.
    props = dict(values_msg["properties"])
    for sub in descoped(chart_dir):
        props = {**_resolve(values_msg["properties"][sub], defs)["properties"], **props}
    root = {"type": "object", "additionalProperties": False, "properties": props}
    _declare(root, defaults, defs)
    return {"definitions": defs, **root}


def problems(schema: dict[str, Any], chart_dir: Path, values: dict[str, Any]) -> list[tuple]:
    """(key path, reason) of every value Istio's typed values (and the chart) refuse."""
    api = schema.get(META, {}).get("valuesApi", "?")
    checker = jsonschema.Draft7Validator(chart_schema(schema, chart_dir))
    out: list[tuple[list[str], str]] = []
    for err in sorted(checker.iter_errors(values), key=lambda e: list(map(str, e.absolute_path))):
        path = [str(p) for p in err.absolute_path]
        if err.validator == "additionalProperties":
            known = set(err.schema.get("properties") or {})
            for key in sorted(k for k in err.instance if k not in known):
                out.append(
                    (
                        [*path, key],
                        f"unknown key, refused by Istio's typed values ({ROOT}, istio.io/istio "
                        f"{api}) and not declared by the chart's values.yaml",
                    )
                )
        else:
            out.append((path, f"{err.message} (Istio's typed values, {ROOT})"))
    return out


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    return generated.main(
        repo,
        argv,
        __doc__.splitlines()[0],
        lambda: produce(repo),
        (IstioValuesError,),
        "kgops istio-values",
    )


if __name__ == "__main__":
    raise SystemExit(main())
