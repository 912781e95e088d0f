"""Strict schemas for every object we render: the built-in kinds of the Kubernetes version
versions.yaml pins (kubernetes-validate), custom resources from the pinned upstream CRDs.

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

from kserve_gitops.repo import Repo, files
from kserve_gitops.upstream import crds

_DEFS_URI = "https://kubernetes.io/api/_definitions.json"
_OBJECT_META = {"$ref": f"{_DEFS_URI}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_MAX_MESSAGE = 240


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(root)'}: {self.message}"


# apiVersion/kind -> strict schema, of custom resources beyond the pinned CRDs (crd_schemas_in).
CrdSchemas = Mapping[str, dict[str, Any]]


class SchemaNotFound(Exception):
    """A kind with no schema: an error, never a silent skip."""


def builtin_dir(kube_version: str) -> Path:
    """kubernetes-validate's strict schemas of Kubernetes `kube_version` (e.g. "1.36.4"): it
    ships one schema set per minor, `v<major>.<minor>.0` (a patch release changes no API)."""
    base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    major, minor = kube_version.split(".")[:2]
    return Path(str(base / f"v{major}.{minor}.0-local-strict"))


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
    return crd_schemas_in(
        doc
        for path in crd_files
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
    )


def crd_schemas_in(docs: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """apiVersion/kind -> strict schema of every served version of the CRDs among `docs` (the
    pinned ones; and those the upstream charts render, such as cert-manager's Certificate)."""
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


def _pins_digest(repo: Repo) -> str:
    # The prefix versions the conversion above: a change to it must not reuse an old cache.
    pins = "v2" + "".join(p.sha256 for p in crds.pins(repo))
    return hashlib.sha256(pins.encode()).hexdigest()[:16]


def _pinned_crd_schemas(repo: Repo, digest: str) -> dict[str, dict[str, Any]]:
    """apiVersion/kind -> strict schema of the pinned CRDs, cached on disk by their checksums."""
    cached = repo.cache / "schemas" / f"crds-{digest}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    schemas = _crd_schemas_from(crds.ensure(repo))
    files.write_text(cached, json.dumps(schemas))
    return schemas


def _builtin_schema(builtin: Path, api_version: str, kind: str) -> dict[str, Any] | None:
    # kubernetes-validate names files kind-group-version, the group cut at its first dot.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = builtin / f"{kind.lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """For anyOf/oneOf failures, the deepest alternative's errors say more than the summary."""
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None and len(best.absolute_path) > len(error.absolute_path):
            yield from _leaf_errors(best)
            return
    yield error


class Schemas:
    """The schemas of one Kubernetes version and one set of pinned CRDs."""

    def __init__(self, kube_version: str, pinned_crds: dict[str, dict[str, Any]]) -> None:
        self.kube_version = kube_version
        self.pinned_crds = pinned_crds
        self._builtin = builtin_dir(kube_version)
        defs = json.loads((self._builtin / "_definitions.json").read_text())
        self._registry = Registry().with_resource(_DEFS_URI, Resource.from_contents(defs))
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        # Checking is a function of the object alone: a body seen before (in an earlier run in
        # this process, such as a test's on a copy of the checkout) is not checked again.
        self._checked: dict[str, list[Violation]] = {}

    def _validator(self, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
        return jsonschema.Draft202012Validator(schema, registry=self._registry)

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        key = f"{api_version}/{kind}"
        if key not in self._validators:
            schema = self.pinned_crds.get(key) or _builtin_schema(self._builtin, api_version, kind)
            if schema is None:
                raise SchemaNotFound(
                    f"no schema for apiVersion {api_version!r} kind {kind!r}: neither a "
                    f"Kubernetes {self.kube_version} built-in kind nor a pinned CRD "
                    "(config/crds.tsv)"
                )
            self._validators[key] = self._validator(schema)
        return self._validators[key]

    def check(self, body: dict[str, Any], extra: CrdSchemas | None = None) -> list[Violation]:
        """Every schema violation of one object (not just the first). `extra` (crd_schemas_in)
        covers custom resources whose CRD is not pinned; a pinned CRD takes precedence."""
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return [Violation("", "apiVersion and kind must both be strings")]
        key = f"{api_version}/{kind}"
        if extra and key in extra and key not in self.pinned_crds:
            return self._violations(self._validator(extra[key]), body)
        seen = repr(body)  # the exact object, types included
        if seen not in self._checked:
            self._checked[seen] = self._violations(self.validator(api_version, kind), body)
        return list(self._checked[seen])

    @staticmethod
    def _violations(
        checker: jsonschema.protocols.Validator, body: dict[str, Any]
    ) -> list[Violation]:
        found: list[Violation] = []
        for error in checker.iter_errors(body):
            for leaf in _leaf_errors(error):
                message = leaf.message
                if len(message) > _MAX_MESSAGE:
                    message = message[:_MAX_MESSAGE] + "..."
                found.append(Violation(".".join(str(p) for p in leaf.absolute_path), message))
        return sorted(set(found), key=lambda v: (v.path, v.message))


# (Kubernetes version, CRD pins) -> Schemas: checkouts with the same pins (a test's copy) share.
_SHARED: dict[tuple[str, str], Schemas] = {}


@cache
def for_repo(repo: Repo) -> Schemas:
    """The schemas `repo`'s objects are checked with, built once per Repo."""
    key = (repo.kubernetes_version, _pins_digest(repo))
    if key not in _SHARED:
        _SHARED[key] = Schemas(key[0], _pinned_crd_schemas(repo, key[1]))
    return _SHARED[key]


def check(repo: Repo, body: dict[str, Any], extra: CrdSchemas | None = None) -> list[Violation]:
    """Every schema violation of one object, against the schemas of `repo`'s pins."""
    return for_repo(repo).check(body, extra)
