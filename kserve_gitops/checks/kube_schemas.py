"""Strict schemas for every object we render: Kubernetes 1.34 built-in kinds from
kubernetes-validate, custom resources from the pinned upstream CRDs.

CRD schemas are made strict the way the API server prunes: an object that lists its
properties accepts no others unless it says x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from kserve_gitops.repo import Repo, files, paths
from kserve_gitops.upstream import crds

KUBE_VERSION = "1.34"
_DEFS_URI = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFS_URI}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_MAX_MESSAGE = 240


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(root)'}: {self.message}"


# apiVersion/kind -> validator, for custom resources beyond the pinned CRDs (crd_validators).
Validators = Mapping[str, jsonschema.protocols.Validator]


class SchemaNotFound(Exception):
    """A kind with no schema: an error, never a silent skip."""


def _builtin_dir() -> Path:
    base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return Path(str(base / f"v{KUBE_VERSION}.0-local-strict"))


@cache
def _registry() -> Registry:
    defs = json.loads((_builtin_dir() / "_definitions.json").read_text())
    return Registry().with_resource(_DEFS_URI, Resource.from_contents(defs))


def _strict(node: Any) -> Any:
    """A copy of a CRD schema node with unknown fields forbidden and `nullable` honoured."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _crd_schemas_from(crd_files: list[Path]) -> dict[str, dict[str, Any]]:
    return _crd_schemas_of(
        doc
        for path in crd_files
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
    )


def _crd_schemas_of(docs: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """apiVersion/kind -> strict schema of every served version of the CRDs among `docs`."""
    schemas: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not version.get("served", True) or schema is None:
                continue
            strict = _strict(schema)
            props = strict.setdefault("properties", {})
            props["metadata"] = _OBJECT_META
            # Istio's CRDs describe spec and status only; every object has these two.
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            key = f"{spec['group']}/{version['name']}/{spec['names']['kind']}"
            schemas[key] = strict
    return schemas


@cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """apiVersion/kind -> strict schema, cached on disk by the CRD pins' checksums."""
    crd_files = crds.ensure(Repo.discover())
    # The prefix versions the conversion above: a change to it must not reuse an old cache.
    pins = "v2" + "".join(p.sha256 for p in crds.pins(Repo.discover()))
    digest = hashlib.sha256(pins.encode()).hexdigest()[:16]
    cached = paths.CACHE / "schemas" / f"crds-{digest}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    schemas = _crd_schemas_from(crd_files)
    files.write_text(cached, json.dumps(schemas))
    return schemas


def _builtin_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    # kubernetes-validate names files kind-group-version, the group cut at its first dot.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _builtin_dir() / f"{kind.lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@cache
def validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = crd_schemas().get(f"{api_version}/{kind}") or _builtin_schema(api_version, kind)
    if schema is None:
        raise SchemaNotFound(
            f"no schema for apiVersion {api_version!r} kind {kind!r}: neither a Kubernetes "
            f"{KUBE_VERSION} built-in kind nor a pinned CRD (config/crds.tsv)"
        )
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def crd_validators(docs: Iterable[Any]) -> Validators:
    """apiVersion/kind -> validator for the CRDs among `docs` (those the upstream charts render,
    such as cert-manager's Certificate, which no pin in config/crds.tsv covers)."""
    return {
        key: jsonschema.Draft202012Validator(schema, registry=_registry())
        for key, schema in _crd_schemas_of(docs).items()
    }


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """For anyOf/oneOf failures, the deepest alternative's errors say more than the summary."""
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None and len(best.absolute_path) > len(error.absolute_path):
            yield from _leaf_errors(best)
            return
    yield error


def check(body: dict[str, Any], extra: Validators | None = None) -> list[Violation]:
    """Every schema violation of one object (not just the first). `extra` (crd_validators)
    covers custom resources whose CRD is not pinned; a pinned CRD takes precedence."""
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Violation("", "apiVersion and kind must both be strings")]
    key = f"{api_version}/{kind}"
    if extra and key in extra and key not in crd_schemas():
        checker = extra[key]
    else:
        checker = validator(api_version, kind)
    found: list[Violation] = []
    for error in checker.iter_errors(body):
        for leaf in _leaf_errors(error):
            message = leaf.message
            if len(message) > _MAX_MESSAGE:
                message = message[:_MAX_MESSAGE] + "..."
            found.append(Violation(".".join(str(p) for p in leaf.absolute_path), message))
    return sorted(set(found), key=lambda v: (v.path, v.message))
