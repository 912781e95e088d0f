"""Every storageUri names storage the environment declares: the claim of a pvc:// URI (with an
access mode its replicas can share), the service account holding a bucket's credentials,
modelcar support for oci://. Otherwise the predictor pod stays Pending or fails to download."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kserve_gitops.checks.rules import (
    Context,
    Problems,
    kserve_values,
    kserve_values_file,
    values_file,
)
from kserve_gitops.repo.render import Obj

# Schemes KServe's storage-initializer downloads with credentials from the predictor's service
# account (kserve pkg/credentials: the Secrets the ServiceAccount lists).
CREDENTIAL_SCHEMES = ("s3://", "gs://", "hdfs://", "webhdfs://")
SINGLE_NODE_ACCESS = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})


def _storage_uris(isvc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(field path, storageUri, predictor) of the stable and every canary predictor."""
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    uri = (predictor.get("model") or {}).get("storageUri")
    if uri:
        yield "model.storageUri", str(uri), predictor
    for i, canary in enumerate(spec.get("canary") or []):
        pred = canary.get("predictor") or {}
        uri = (pred.get("model") or {}).get("storageUri")
        if uri:
            yield f"canary.storageUri (spec.canary.{i})", str(uri), {**predictor, **pred}


def check_storage_provided(objs: list[Obj], ctx: Context) -> Problems:
    layer = f"environments/{ctx.env}/platform/configs" if ctx.env else "the environment"
    kserve = kserve_values(objs)
    for isvc in (o for o in objs if o.kind == "InferenceService"):
        namespace = (isvc.body.get("metadata") or {}).get("namespace")
        declared = {
            (o.kind, o.name): o.body
            for o in objs
            if (o.body.get("metadata") or {}).get("namespace") == namespace
        }
        for key, uri, predictor in _storage_uris(isvc.body):
            field = f"{values_file(isvc)}: {key} ({isvc.ref})"
            if uri.startswith("pvc://"):
                claim = uri.removeprefix("pvc://").split("/", 1)[0]
                pvc = declared.get(("PersistentVolumeClaim", claim))
                if pvc is None:
                    yield (
                        field,
                        (
                            f"{uri}: no PersistentVolumeClaim {claim!r} in namespace "
                            f"{namespace!r}: declare it in {layer}, with the model namespace "
                            "(the pod would stay Pending)"
                        ),
                    )
                    continue
                modes = set((pvc.get("spec") or {}).get("accessModes") or [])
                replicas = int(predictor.get("maxReplicas") or predictor.get("minReplicas") or 1)
                if replicas > 1 and modes <= SINGLE_NODE_ACCESS:
                    yield (
                        field,
                        (
                            f"{uri}: claim {claim!r} is {sorted(modes)}, but up to {replicas} "
                            "replicas may land on different nodes: ReadWriteMany or ReadOnlyMany, "
                            "or maxReplicas 1"
                        ),
                    )
            elif uri.startswith(CREDENTIAL_SCHEMES):
                sa_name = predictor.get("serviceAccountName")
                sa = declared.get(("ServiceAccount", str(sa_name))) if sa_name else None
                if not sa or not sa.get("secrets"):
                    yield (
                        field,
                        (
                            f"{uri}: expected predictor.serviceAccountName naming a ServiceAccount "
                            f"declared in {layer} (namespace {namespace!r}) that lists the Secret "
                            "with the storage credentials; KServe's storage-initializer reads them "
                            f"there (got {sa_name or 'none'})"
                        ),
                    )
            elif uri.startswith("oci://"):
                storage = (kserve.get("kserve") or {}).get("storage") or {}
                if storage.get("enableModelcar") is False:
                    yield (
                        field,
                        (
                            f"{uri}: expected kserve.storage.enableModelcar true in "
                            f"{kserve_values_file(ctx)}"
                        ),
                    )
