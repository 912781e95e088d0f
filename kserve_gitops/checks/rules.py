"""What a policy rule sees and says: the environment's context, the (field, problem) pairs a
rule yields, the violation reported; and the facts several rules read off rendered objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import Obj

Problems = Iterator[tuple[str, str]]  # (field path, what is wrong)


@dataclass(frozen=True)
class Context:
    repo: Repo
    model_namespaces: frozenset[str]  # where InferenceServices run
    restricted_namespaces: frozenset[str]  # namespaces that must enforce PSS restricted
    env: str = ""  # the environment, to name its files in messages


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str  # file or rendered source, and object
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: [{self.rule}] {self.message}"


def values_file(obj: Obj) -> str:
    """The file an object was rendered from (a chart's values file, a kustomization)."""
    return obj.source.split(" -> ")[0]


def chart_values(configmap: Obj) -> dict[str, Any]:
    """The chart values a generated ConfigMap carries for a Flux HelmRelease (its values.yaml)."""
    text = (configmap.body.get("data") or {}).get("values.yaml") or ""
    return yaml.load(text, Loader=yaml.CSafeLoader) or {}


def kserve_values(objs: list[Obj]) -> dict[str, Any]:
    """The kserve-resources chart values the environment's Flux layer carries (generated
    ConfigMap kserve-resources-values-<hash>, the file Argo CD reads too)."""
    for o in objs:
        if o.kind == "ConfigMap" and o.name.startswith("kserve-resources-values"):
            return chart_values(o)
    return {}


def kserve_values_file(ctx: Context) -> str:
    return f"environments/{ctx.env}/platform/kserve/values/kserve-resources.yaml"


def namespace_labels(objs: list[Obj], ns: str) -> dict[str, str] | None:
    """The labels of the declared Namespace `ns`, None when the environment does not declare it."""
    for o in objs:
        if o.kind == "Namespace" and o.name == ns:
            return dict((o.body.get("metadata") or {}).get("labels") or {})
    return None
