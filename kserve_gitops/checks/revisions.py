"""What Knative and KServe make of the environment's InferenceServices, judged as they will run:
the predictors' pod fields Knative admits under the environment's features, and the revision
pod (model, queue-proxy, storage-initializer) under Pod Security restricted and Guaranteed QoS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kserve_gitops.checks import pods
from kserve_gitops.checks.rules import (
    Context,
    Problems,
    kserve_values,
    kserve_values_file,
    values_file,
)
from kserve_gitops.knative import admission, revision
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import Obj

KNATIVE_SERVING = "platform/configs/knative-serving.yaml"


def _one(objs: list[Obj], kind: str) -> Obj | None:
    found = [o for o in objs if o.kind == kind]
    return found[0] if len(found) == 1 else None


def _knative_isvcs(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o.kind == "InferenceService" and revision.is_knative(o.body)]


def _knative_serving_file(ctx: Context) -> str:
    """The environment's KnativeServing file when it has one (its overlay), else the shared."""
    own = f"environments/{ctx.env}/{KNATIVE_SERVING}"
    return own if ctx.env and (ctx.repo.root / own).is_file() else KNATIVE_SERVING


def check_knative_features(objs: list[Obj], ctx: Context) -> Problems:
    isvcs = _knative_isvcs(objs)
    if not isvcs:
        return
    serving = _one(objs, "KnativeServing")
    where = _knative_serving_file(ctx)
    if serving is None:
        yield "KnativeServing", "exactly one is needed to tell which pod fields Knative admits"
        return
    flags = admission.features(serving.body)
    used: set[str] = set()
    for isvc in isvcs:
        predictor = (isvc.body.get("spec") or {}).get("predictor") or {}
        used |= admission.needed(predictor)
        for r in admission.refusals(ctx.repo, predictor, flags):
            key = r.path if r.path.startswith("model.") else f"predictor.{r.path}"
            field = f"{values_file(isvc)}: {key} ({isvc.ref} spec.predictor.{r.path})"
            if r.feature:
                why = (
                    f"Knative Serving refuses the revision unless feature {r.feature} is enabled "
                    f"in KnativeServing spec.config.features ({where})"
                )
                yield field, why + (f"; {r.detail}" if r.detail else "")
            else:
                yield field, r.detail
    for feature in sorted(set(admission.POD_FIELD_FEATURES.values()) - used):
        if admission.enabled(flags, feature):
            yield (
                f"{where}: KnativeServing spec.config.features.{feature}",
                "enabled, but no InferenceService of the environment sets its pod field: Knative "
                "admits it for every Service; enable exactly the features the models use",
            )


def revision_pods(repo: Repo, objs: list[Obj]) -> Iterator[tuple[Obj, dict[str, Any]]]:
    """(InferenceService, its revision pod) of every Knative-mode InferenceService."""
    serving = _one(objs, "KnativeServing")
    values = kserve_values(objs)
    for isvc in _knative_isvcs(objs):
        yield isvc, revision.pod(repo, isvc.body, serving.body if serving else {}, values)


def _named(path: str, pod: dict[str, Any]) -> str:
    """spec.containers.1... -> spec.containers[queue-proxy]..., for readable messages."""
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("containers", "initContainers") and parts[i + 1].isdigit():
            name = pod["spec"][part][int(parts[i + 1])]["name"]
            return ".".join([*parts[:i], f"{part}[{name}]", *parts[i + 2 :]])
    return path


def check_revision_pod_security(objs: list[Obj], ctx: Context) -> Problems:
    for isvc, pod in revision_pods(ctx.repo, objs):
        prefix = f"{values_file(isvc)}: revision pod of {isvc.ref}"
        for check in pods.RESTRICTED:
            for path, problem in check(pod, ctx):
                yield f"{prefix}: {_named(path, pod)}", problem


def check_qos(objs: list[Obj], ctx: Context) -> Problems:
    """Requests == limits on the model promise the Guaranteed QoS class; the pod only gets it
    when every container, Knative's queue-proxy and KServe's init container included, does."""
    fixes = {
        revision.QUEUE_PROXY: f"set KnativeServing spec.config.deployment queue-sidecar-"
        f"{{cpu,memory}}-request equal to queue-sidecar-{{cpu,memory}}-limit "
        f"({_knative_serving_file(ctx)})",
        revision.STORAGE_INITIALIZER: f"set kserve.storage.resources requests equal to limits "
        f"({kserve_values_file(ctx)})",
        revision.MODEL_CONTAINER: "set model.resources requests equal to limits",
    }
    for isvc, pod in revision_pods(ctx.repo, objs):
        model = ((isvc.body.get("spec") or {}).get("predictor") or {}).get("model") or {}
        if revision.guaranteed_gaps(model.get("resources") or {}):
            continue  # no promise made
        for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            gaps = revision.guaranteed_gaps(c.get("resources") or {})
            if gaps:
                yield (
                    f"{values_file(isvc)}: model.resources ({isvc.ref})",
                    f"requests == limits promise the Guaranteed QoS class, but {c['name']} has "
                    f"{', '.join(gaps)}, so the pod is Burstable: {fixes[c['name']]}",
                )
